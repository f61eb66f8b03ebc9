"""The stores, chosen once from the settings' profile: :func:`open_stores`.

``local``: parquet files under ``data_dir`` (:mod:`flows.stores.parquet`), the kill switch and
swap key as files (:mod:`flows.stores.files`), no event bus.  ``timescale``: TimescaleDB
(:mod:`flows.stores.timescale`) and Redis (:mod:`flows.stores.redis`: event bus, kill switch,
swap key).  A new backend is a module here plus a :class:`Stores` subclass in :data:`PROFILES`.

The factories open connections when called, so a Bytewax sink calls them in its partition
builder (on the worker), never when the flow is defined.  ``flows.stores.feast_timescale``
(the Feast offline store plugin) is separate: Feast loads it by name from the yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.stores.base import (
    ChangeFeed,
    DecisionReader,
    DecisionWriter,
    EventBus,
    HistoryReader,
    HistoryWriter,
    KillSwitch,
    MonitorReader,
    SwapTrigger,
)

if TYPE_CHECKING:
    from flows.settings import Settings


class Stores:
    """The ``local`` profile: files under ``data_dir``."""

    profile = "local"
    feast_yaml = "feature_store.yaml"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def describe(self, bar_features: int) -> str:
        """Say where history is kept (the main job's summary line)."""
        return f"  {bar_features} bar features per symbol; history under {self.settings.data_dir / 'offline'}"

    def history_writer(self, worker: int = 0) -> HistoryWriter:
        """Return a writer of bars, features and dead letters."""
        from flows.stores.parquet import ParquetHistory

        return ParquetHistory(self.settings.data_dir, worker)

    def decision_writer(self) -> DecisionWriter:
        """Return a writer of the decision tables."""
        from flows.stores.parquet import ParquetDecisions

        return ParquetDecisions(self.settings.data_dir)

    def event_bus(self, maxlen: int = 100_000) -> EventBus | None:
        """Return the event bus (``None``: the profile has none)."""
        return None

    def history_reader(self) -> HistoryReader:
        """Return the reader of stored bars."""
        from flows.stores.parquet import ParquetReader

        return ParquetReader(self.settings.data_dir)

    def decision_reader(self) -> DecisionReader:
        """Return the reader of stored decision records."""
        from flows.stores.parquet import ParquetReader

        return ParquetReader(self.settings.data_dir)

    def monitor_reader(self) -> MonitorReader:
        """Return the dashboard's bounded reader of the stored records."""
        from flows.stores.parquet_monitor import ParquetMonitor

        return ParquetMonitor(self.settings.data_dir)

    def change_feed(self) -> ChangeFeed:
        """Return what tells the dashboard of new records: the decision directories, polled."""
        from flows.stores.parquet_monitor import DirectoryChangeFeed

        return DirectoryChangeFeed(self.settings.data_dir)

    def kill_switch(self) -> KillSwitch:
        """Return the kill switch (``risk.kill_switch.file``, default ``<data_dir>/KILL``)."""
        from flows.stores.files import FileKillSwitch

        return FileKillSwitch(self.settings.risk.kill_switch.file or Path(self.settings.data_dir) / "KILL")

    def swap_trigger(self) -> SwapTrigger:
        """Return the model swap key (a file under ``data_dir`` named after ``scoring.swap_key``)."""
        from flows.stores.files import SwapFile

        return SwapFile(self.settings.data_dir / self.settings.scoring.swap_key.replace(":", "_"))

    def feast_environment(self) -> dict[str, str]:
        """Return the server variables the profile's Feast yaml reads (none)."""
        return {}

    def feast_source(self, table: str, timeframe: str) -> Any:
        """Return the Feast batch source of a feature table: the parquet directory the history writer fills."""
        from feast import FileSource
        from feast.data_format import ParquetFormat

        from flows.feature_catalog import offline_dir, view_name

        return FileSource(name=f"{view_name(table, timeframe)}_source",
                          path=str(offline_dir(self.settings.data_dir, table, timeframe)),
                          file_format=ParquetFormat(), timestamp_field="ts", created_timestamp_column="created_at")


class TimescaleStores(Stores):
    """The ``timescale`` profile: TimescaleDB and Redis (without ``REDIS_URL``, the files' switch and swap key)."""

    profile = "timescale"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.feast_yaml = "timescale-redis.yaml" if settings.feast_online == "redis" else "timescale.yaml"

    def _dsn(self) -> str:
        self.settings.require_servers()
        assert self.settings.timescale_dsn is not None
        return self.settings.timescale_dsn.get_secret_value()

    def _redis(self) -> str:
        self.settings.require_servers()
        assert self.settings.redis_url is not None
        return self.settings.redis_url.get_secret_value()

    def describe(self, bar_features: int) -> str:
        """Say where history is kept (the main job's summary line)."""
        return "  history in TimescaleDB"

    def history_writer(self, worker: int = 0) -> HistoryWriter:
        """Return a writer of bars, features and dead letters."""
        from flows.stores.timescale import TimescaleHistory

        return TimescaleHistory(self._dsn(), self.settings.stores)

    def decision_writer(self) -> DecisionWriter:
        """Return a writer of the decision tables."""
        from flows.stores.timescale import TimescaleDecisions

        return TimescaleDecisions(self._dsn(), self.settings.stores)

    def event_bus(self, maxlen: int = 100_000) -> EventBus | None:
        """Return the Redis streams."""
        from flows.stores.redis import RedisEventBus

        return RedisEventBus(self._redis(), maxlen, self.settings.stores)

    def history_reader(self) -> HistoryReader:
        """Return the reader of stored bars."""
        from flows.stores.timescale import TimescaleReader

        return TimescaleReader(self._dsn())

    def decision_reader(self) -> DecisionReader:
        """Return the reader of stored decision records."""
        from flows.stores.timescale import TimescaleReader

        return TimescaleReader(self._dsn())

    def monitor_reader(self) -> MonitorReader:
        """Return the dashboard's bounded reader (SQL that aggregates or limits on the server)."""
        from flows.stores.timescale_monitor import TimescaleMonitor

        return TimescaleMonitor(self._dsn())

    def change_feed(self) -> ChangeFeed:
        """Return the Redis streams of the event bus."""
        from flows.stores.redis import RedisChangeFeed
        from flows.stores.schema import DECISIONS

        return RedisChangeFeed(self._redis(), tuple(DECISIONS))

    def kill_switch(self) -> KillSwitch:
        """Return the Redis key ``risk.kill_switch.redis_key``."""
        if self.settings.redis_url is None:
            return super().kill_switch()
        from flows.stores.redis import RedisKillSwitch

        return RedisKillSwitch(self.settings.redis_url.get_secret_value(), self.settings.risk.kill_switch.redis_key,
                               self.settings.stores.redis_timeout_s)

    def swap_trigger(self) -> SwapTrigger:
        """Return the Redis key ``scoring.swap_key``."""
        if self.settings.redis_url is None:
            return super().swap_trigger()
        from flows.stores.redis import RedisSwapKey

        return RedisSwapKey(self.settings.redis_url.get_secret_value(), self.settings.scoring.swap_key,
                            self.settings.stores.redis_timeout_s)

    def feast_environment(self) -> dict[str, str]:
        """Return the connection values the timescale yamls read, derived from TIMESCALE_DSN and REDIS_URL."""
        from urllib.parse import urlparse

        from psycopg.conninfo import conninfo_to_dict

        pg = conninfo_to_dict(self._dsn())
        env = {
            "TIMESCALE_HOST": str(pg.get("host", "127.0.0.1")),
            "TIMESCALE_PORT": str(pg.get("port", "5432")),
            "TIMESCALE_DB": str(pg.get("dbname", "postgres")),
            "TIMESCALE_USER": str(pg.get("user", "postgres")),
            "TIMESCALE_PASSWORD": str(pg.get("password", "")),
        }
        redis = urlparse(self._redis())
        db = (redis.path or "/0").lstrip("/") or "0"
        conn = f"{redis.hostname}:{redis.port or 6379},db={db}"
        if redis.password:
            conn += f",password={redis.password}"
        env["FEAST_REDIS_CONNECTION"] = conn
        return env

    def feast_source(self, table: str, timeframe: str) -> Any:
        """Return the Feast batch source of a feature table: its hypertable's rows of the timeframe."""
        from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
            PostgreSQLSource,
        )

        from flows.feature_catalog import view_name

        return PostgreSQLSource(name=f"{view_name(table, timeframe)}_source",
                                query=f"SELECT * FROM {table} WHERE timeframe = '{timeframe}'",
                                timestamp_field="ts", created_timestamp_column="created_at")


PROFILES: dict[str, type[Stores]] = {"local": Stores, "timescale": TimescaleStores}


def open_stores(settings: Settings) -> Stores:
    """Return the stores of the settings' profile (connections open when a factory is called)."""
    return PROFILES[settings.profile](settings)
