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


def applied_data_dir(dest: Path) -> Path:
    """Run ``feast apply`` (``local`` profile) of a repository copy in ``dest`` for data directory ``dest/var``; return it.

    The state :func:`copy_applied_feast` hands to the runs of a module, one ``feast apply`` for all of them.
    """
    from flows import feast_store
    from flows.settings import load_settings

    var = dest / "var"
    feast_store.apply(load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(var),
                                         "CRYPTOSTREAM_FEAST_REPO": str(copy_feature_repo(dest))}))
    return var


def copy_applied_feast(applied: Path, var: Path) -> Path:
    """Give data directory ``var`` the Feast state ``feast apply`` left under data directory ``applied``; return ``var``.

    The registry and the online store's empty tables (``<data_dir>/feast``), as a run of the
    same repository would find them after its own ``feast apply`` (a subprocess of 5-10 s on 2
    cores), so the flow's ``ensure_applied`` finds every view and goes on.  Only for runs that
    read nothing offline through Feast: the registry's parquet sources still name ``applied``'s
    directories (the flow writes its history through its own writers, its online rows through Feast).
    """
    import shutil

    shutil.copytree(applied / "feast", var / "feast")
    return var
