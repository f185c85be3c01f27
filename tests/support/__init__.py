"""Shared helpers for npv-guard's integration and end-to-end tests."""
