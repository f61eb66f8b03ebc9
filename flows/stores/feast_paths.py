"""Keep the local Feast registry and SQLite online store under the settings' ``data_dir``.

The profiles' yaml files name them ``${CRYPTOSTREAM_DATA_DIR}/feast/...``, so two runs with
different data directories never share Feast state (issue 17, defect 6; they used to share
``feature_repo/data``).  :func:`flows.feast_store.open_store` and :func:`~flows.feast_store.apply`
set the variable from the settings; a user's bare ``feast -c feature_repo apply`` may leave it
unset, and then :func:`data_path` puts the files under the data directory the settings give
(``CRYPTOSTREAM_CONFIG``'s or the default ``<project>/var``), where the flow looks too.
Both classes also create the directory, which Feast's own file stores expect to exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.infra.registry.file import FileRegistryStore
from feast.repo_config import RegistryConfig, RepoConfig

UNSET = "${CRYPTOSTREAM_DATA_DIR}"  # what os.path.expandvars leaves of an unset variable
_SELF = "flows.stores.feast_paths.DataDirSqliteOnlineStore"


def data_path(path: str, repo_path: Path | None) -> Path:
    """Return a store's file: the data directory for an unset variable, relative paths from the repository."""
    if UNSET in path:
        from flows.settings import load_settings

        path = path.replace(UNSET, str(load_settings().data_dir.absolute()))
    p = Path(path)
    if not p.is_absolute() and repo_path is not None:
        p = Path(repo_path) / p
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


class DataDirRegistryStore(FileRegistryStore):
    """Feast's file registry, at :func:`data_path` (``registry_store_type`` in the yaml)."""

    def __init__(self, registry_config: RegistryConfig, repo_path: Path) -> None:
        super().__init__(registry_config, repo_path)
        self._filepath = data_path(registry_config.path, repo_path)


class DataDirSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """:class:`SqliteOnlineStoreConfig` for :class:`DataDirSqliteOnlineStore`."""

    type: Literal["flows.stores.feast_paths.DataDirSqliteOnlineStore"] = _SELF  # type: ignore[assignment]


class DataDirSqliteOnlineStore(SqliteOnlineStore):
    """Feast's SQLite online store, its file at :func:`data_path`."""

    @staticmethod
    def _get_db_path(config: RepoConfig) -> str:
        return str(data_path(config.online_store.path, config.repo_path))
