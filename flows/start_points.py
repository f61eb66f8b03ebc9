"""Where each symbol's stream started, kept durably beside the Bytewax recovery snapshots.

Bytewax stores a source partition's position (the last trade id it handed over) only
when it takes a snapshot, at the end of an epoch.  A flow killed before its first
snapshot (at max replay speed a whole replay fits in the first epoch) left no position:
the restart started from whatever the websocket sent next, the trades in between were
lost, and a finished replay gave a run with no bars (issue 17, defect 7).

So a partition that starts without a snapshot records its starting point, the first
trade id it hands over and that trade's time, before it hands the trade over:
``<recovery directory>/start_points/<MARKET>.json``, written to a temporary file,
fsynced and renamed into place (atomic: a reader sees the whole record or none).  A
restart whose partition has no snapshot resumes from the recorded point and fills the
gap from REST, as after a snapshot.  A partition's snapshot, once there is one, always
wins; the record is written once per recovery directory and never changed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

FOLDER = "start_points"


class StartPoint(NamedTuple):
    """The first trade a symbol's stream handed over: its id and its time (ms since the epoch)."""

    symbol: str
    first_id: int
    time_ms: int


class StartPoints:
    """The start points kept in one recovery directory (``None``: a run without recovery keeps none)."""

    def __init__(self, recovery_dir: Path | None) -> None:
        """Keep the records under ``recovery_dir`` (created on the first record)."""
        self.folder = None if recovery_dir is None else Path(recovery_dir) / FOLDER

    def _path(self, symbol: str) -> Path:
        assert self.folder is not None
        return self.folder / (symbol.replace("/", "_") + ".json")

    def get(self, symbol: str) -> StartPoint | None:
        """Return the recorded start point of ``symbol``, or None (none recorded, or no recovery directory)."""
        if self.folder is None:
            return None
        path = self._path(symbol)
        try:
            doc = json.loads(path.read_text())
            point = StartPoint(str(doc["symbol"]), int(doc["first_id"]), int(doc["time_ms"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"start point {path}: unreadable ({exc}); delete the file to start {symbol} afresh") \
                from None
        if point.symbol != symbol:
            raise ValueError(f"start point {path}: holds {point.symbol!r}, not {symbol!r}")
        return point

    def record(self, point: StartPoint) -> bool:
        """Write ``point`` durably and atomically unless one is recorded; return whether it was written."""
        if self.folder is None or self.get(point.symbol) is not None:
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(point.symbol)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(point._asdict(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.folder, os.O_RDONLY)  # the rename itself survives a crash once the folder is synced
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        log.info("%s: start point recorded (trade id %d) in %s", point.symbol, point.first_id, path)
        return True
