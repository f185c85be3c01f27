"""The Asterisk dialplan includes, shipped in the wheel as the data package `npv_guard.dialplan`.

This file only makes the directory importable (pyproject.toml maps it with package-dir; setuptools'
editable installs find a mapped package by its __init__.py). Asterisk, the lab and the container
image read only the *.conf files; `npv-guard dialplan show|install` reads them with importlib.resources.
"""
