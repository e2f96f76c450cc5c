"""This repository's own test policy (the scenario plugin itself comes from the installed package's pytest11 entry point)."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that need a real Windows VM run only when KCB_WINDOWS_CONFIG names a configuration."""
    if os.environ.get("KCB_WINDOWS_CONFIG"):
        return
    deselected = [item for item in items if item.get_closest_marker("windows_vm") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker("windows_vm") is None]
