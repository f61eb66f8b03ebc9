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


class DecisionReader(Protocol):
    """Reads stored decision records (backtest checks, the gate, the dashboard, analysts)."""

    def table(self, table: str) -> pd.DataFrame:
        """Return every stored row of a decision table, sorted by time."""
        ...
