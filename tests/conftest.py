"""Shared test fixtures: where the real market data lives, if it is here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kit.repo import PROJECT_ROOT

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Return ../shared/data, or skip the test saying why."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"needs the real market data at {SHARED_DATA} (present in CI; absent in a user's clone)")
    return SHARED_DATA


