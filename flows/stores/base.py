"""The small interfaces of the stores; :func:`flows.stores.open_stores` picks the profile's implementations.

Rows are tuples in the column order of :mod:`flows.stores.schema`; ``tables`` maps a table
name to its rows.  Writers are idempotent (an upsert on the table's key), so a replayed
batch rewrites the same rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    import pandas as pd

Tables = dict[str, list[tuple[Any, ...]]]


class StoreUnavailable(RuntimeError):
    """A store's server cannot be reached just now (a read that may succeed later)."""


class KillStatus(NamedTuple):
    """Whether the switch is engaged, why, since when (ms) and whether to flatten; truthy when engaged."""

    active: bool
    reason: str = ""
    flatten: bool = False
    since: int | None = None

    def __bool__(self) -> bool:
        return self.active


def kill_value(reason: str, flatten: bool) -> str:
    """Return the stored value of an engaged switch (JSON: reason, flatten, since in ms)."""
    return json.dumps({"reason": reason, "flatten": bool(flatten), "since": int(time.time() * 1000)})


def parse_kill_value(raw: str | bytes | None) -> KillStatus:
    """Return the status a stored switch value stands for (any value that is not the switch's JSON engages)."""
    if raw is None:
        return KillStatus(False)
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return KillStatus(True, "engaged (value is not the switch's JSON)")
    since = doc.get("since")
    return KillStatus(True, str(doc.get("reason", "")), bool(doc.get("flatten", False)),
                      int(since) if isinstance(since, (int, float)) else None)


class KillSwitch(Protocol):
    """A switch whose presence stops new risk; unreadable counts as engaged."""

    def active(self) -> bool:
        """Return whether the switch is engaged."""
        ...

    def status(self) -> KillStatus:
        """Return the switch's status with its reason and flatten flag."""
        ...

    def engage(self, reason: str, flatten: bool = False) -> None:
        """Engage the switch."""
        ...

    def release(self) -> None:
        """Release the switch."""
        ...

    def where(self) -> str:
        """Say where the switch is (a path, a Redis key)."""
        ...


class SwapTrigger(Protocol):
    """The model swap key: its current value (``None`` when absent); a new value asks for a swap."""

    def read(self) -> bytes | None:
        """Return the key's current value."""
        ...

    def write(self, value: bytes) -> None:
        """Set the key (a promotion asks the running flows to swap)."""
        ...


class HistoryWriter(Protocol):
    """Writes rows of the history tables (bars, features, dead letters)."""

    def write(self, tables: Tables) -> None:
        """Write (or buffer, until :meth:`flush`) the rows."""
        ...

    def flush(self) -> None:
        """Store every buffered row."""
        ...

    def close(self) -> None:
        """Flush and release the store."""
        ...


class DecisionWriter(Protocol):
    """Writes rows of the decision tables (predictions, orders, fills, risk events, portfolio state)."""

    background: bool  # writes go over the network: the sink overlaps them with the next batch

    def write(self, tables: Tables) -> None:
        """Write the rows (one transaction where the store has them)."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class EventBus(Protocol):
    """Publishes decision records to consumers (dashboards, alerts): one stream per table."""

    def encode(self, table: str, rows: list[tuple[Any, ...]]) -> list[bytes]:
        """Return the stream documents of a table's rows (cheap to call on the flow's thread)."""
        ...

    def publish(self, docs: dict[str, list[bytes]]) -> None:
        """Add the documents to their tables' streams."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class HistoryReader(Protocol):
    """Reads stored bars (training sets, RL environments, reports)."""

    def bars(self, symbols: Sequence[str], timeframe: str, start: pd.Timestamp, end: pd.Timestamp,
             columns: Sequence[str]) -> pd.DataFrame:
        """Return the bars with open time in [start, end), sorted by symbol and time."""
        ...

    def features(self, symbols: Sequence[str], timeframe: str, start: pd.Timestamp, end: pd.Timestamp,
                 columns: Sequence[str]) -> pd.DataFrame:
        """Return the ``bar_features`` rows known in [start, end), sorted by symbol and time (drift checks)."""
        ...


class HistoryTables:
    """A history reader's public reads, each one query of :meth:`_history` over its table (both backends)."""

    def bars(self, symbols: Sequence[str], timeframe: str, start: pd.Timestamp, end: pd.Timestamp,
             columns: Sequence[str]) -> pd.DataFrame:
        """Return the bars with open time in [start, end), sorted by symbol and time."""
        return self._history("bars", symbols, timeframe, start, end, columns)

    def features(self, symbols: Sequence[str], timeframe: str, start: pd.Timestamp, end: pd.Timestamp,
                 columns: Sequence[str]) -> pd.DataFrame:
        """Return the ``bar_features`` rows known in [start, end), sorted by symbol and time."""
        return self._history("bar_features", symbols, timeframe, start, end, columns)

    def _history(self, table: str, symbols: Sequence[str], timeframe: str, start: pd.Timestamp,
                 end: pd.Timestamp, columns: Sequence[str]) -> pd.DataFrame:
        raise NotImplementedError


class DecisionReader(Protocol):
    """Reads stored decision records (backtest checks, the gate, the dashboard, analysts)."""

    def table(self, table: str, since: pd.Timestamp | None = None) -> pd.DataFrame:
        """Return every stored row of a decision table (from ``since`` on, when given), sorted by time."""
        ...


class MonitorReader(Protocol):
    """Bounded reads for the dashboard: each returns at most what a page shows, aggregated in the store.

    ``run`` is a ``run_id`` of the decision tables; frames are sorted by time (oldest first)
    unless said otherwise, with timezone-aware UTC times.
    """

    def runs(self) -> pd.DataFrame:
        """Return ``run_id, first, last`` of every run in ``portfolio_state``, the latest run first."""
        ...

    def equity(self, run: str, points: int) -> pd.DataFrame:
        """Return ``ts, equity, drawdown, gross_exposure, net_exposure``: the last row of each of about
        ``points`` equal time buckets (``drawdown``: the bucket's largest)."""
        ...

    def daily(self, run: str) -> pd.DataFrame:
        """Return ``day, first, last``: the first and last equity of each UTC day."""
        ...

    def latest_state(self, run: str) -> dict[str, Any] | None:
        """Return the run's last ``portfolio_state`` row (JSON columns decoded), ``None`` without rows."""
        ...

    def symbol_flows(self, run: str) -> pd.DataFrame:
        """Return ``symbol, fills, bought, sold, fees, net_qty``: the run's fills summed per symbol."""
        ...

    def fills(self, run: str, limit: int, timeframe: str) -> pd.DataFrame:
        """Return the last ``limit`` fills with their order's ``decided`` time and ``decision_price``
        (the close of the ``timeframe`` bar that closed at the decision)."""
        ...

    def orders(self, run: str, limit: int) -> pd.DataFrame:
        """Return the last ``limit`` orders."""
        ...

    def predictions(self, run: str, limit: int) -> pd.DataFrame:
        """Return the last ``limit`` predictions (``payload`` as JSON text)."""
        ...

    def risk_events(self, run: str, limit: int) -> pd.DataFrame:
        """Return the last ``limit`` risk events."""
        ...

    def risk_counts(self, run: str) -> pd.DataFrame:
        """Return ``rule, events, last`` per rule of the run's risk events, most frequent first."""
        ...

    def freshness(self, symbols: Sequence[str], timeframes: Sequence[str]) -> pd.DataFrame:
        """Return ``group, timeframe, symbol, last``: the newest stored time of bars and of each feature
        table, per symbol and timeframe (``last`` is NaT when none is stored)."""
        ...


class ChangeFeed(Protocol):
    """Tells the dashboard that new records arrived, and shows the newest ones."""

    def token(self) -> str:
        """Return a value that changes whenever a decision table gets new records."""
        ...

    def recent(self, table: str, count: int) -> list[dict[str, Any]]:
        """Return up to ``count`` of the newest records of a decision table, newest first."""
        ...

    def where(self) -> str:
        """Say what is watched (Redis streams, a directory)."""
        ...
