"""The systemd units, shipped in the wheel as the data package `npv_guard.systemd`.

This file only makes the directory importable (pyproject.toml maps it with package-dir; setuptools'
editable installs find a mapped package by its __init__.py); `npv-guard systemd show|install`
reads the units with importlib.resources.
"""
