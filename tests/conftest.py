"""Shared test fixtures: where the real market data lives, if it is here."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Return ../shared/data, or skip the test saying why."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"needs the real market data at {SHARED_DATA} (present in CI; absent in a user's clone)")
    return SHARED_DATA


def copy_feature_repo(dest: Path) -> Path:
    """Copy the Feast repository (definitions and profiles, not its data) so tests never touch the user's stores."""
    import shutil

    repo = dest / "feature_repo"
    repo.mkdir(parents=True)
    for f in (PROJECT_ROOT / "feature_repo").iterdir():
        if f.is_file() and f.suffix in (".py", ".yaml"):
            shutil.copy(f, repo / f.name)
    return repo
