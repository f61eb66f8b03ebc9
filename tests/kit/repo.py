"""The project root and a scratch copy of the Feast repository, so tests never touch the user's stores."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def copy_feature_repo(dest: Path) -> Path:
    """Copy the Feast repository (definitions and profiles, not its data) so tests never touch the user's stores."""
    import shutil

    repo = dest / "feature_repo"
    repo.mkdir(parents=True)
    for f in (PROJECT_ROOT / "feature_repo").iterdir():
        if f.is_file() and f.suffix in (".py", ".yaml"):
            shutil.copy(f, repo / f.name)
    return repo
