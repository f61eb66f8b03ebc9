"""Dead-letter sink for the embedded ``local`` profile: JSON lines under the data directory.

Every refused input is appended with its reason and raw payload, so nothing is
lost; the count per reason is logged.  The ``timescale`` profile writes the same
records to the ``dead_letters`` hypertable.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.records import DeadLetter

log = logging.getLogger(__name__)


class _JsonlPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("ab")
        self.counts: collections.Counter[str] = collections.Counter()

    def write_batch(self, items: list[DeadLetter]) -> None:
        for d in items:
            self.file.write(orjson.dumps(d._asdict()) + b"\n")
            self.counts[d.reason.split(":")[0]] += 1
        self.file.flush()
        log.warning("dead letters so far: %s", dict(self.counts))

    def close(self) -> None:
        self.file.close()


class DeadLetterFile(DynamicSink[DeadLetter]):
    """Append dead letters to ``<dir>/dead_letters-w<worker>.jsonl``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _JsonlPartition:
        return _JsonlPartition(self.directory / f"dead_letters-w{worker_index}.jsonl")
