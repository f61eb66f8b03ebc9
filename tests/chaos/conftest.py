"""Chaos fixtures: every test under tests/chaos carries the ``chaos`` marker (``-m "not chaos"`` skips them)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test collected from this directory ``chaos``."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.chaos)
