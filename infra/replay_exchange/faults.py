"""Fault injection on websocket connections, seeded and logged.

Each connection gets its own :class:`FaultInjector`, seeded from the replay
seed and the connection's number, with one generator per fault kind so the
decisions do not depend on how messages were batched.  Every injected fault
is appended to the server's :class:`FaultLog` (``ReplayExchange.faults`` and
``GET /replay/faults``), naming the connection, the message's sequence number
on it, the stream and the trade id, so a test can match what its client saw.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson

CORRUPT_KINDS = (
    "malformed_json", "missing_field", "nan_price", "negative_price", "zero_price",
    "nan_qty", "negative_qty", "zero_qty",
)


@dataclass(frozen=True)
class FaultConfig:
    """Which faults to inject; all off by default.

    Attributes:
        drop_every: Abort the TCP connection after every N data messages (0 = off).
        stall_every: Pause sending for ``stall_seconds`` after every N messages.
        stall_seconds: Length of a stall.
        duplicate: Fraction of messages sent twice.
        reorder: Fraction of messages swapped with the next one.
        corrupt: Fraction of messages replaced by a corrupt variant.
        corrupt_kinds: Which corruptions to draw from (see ``CORRUPT_KINDS``).
    """

    drop_every: int = 0
    stall_every: int = 0
    stall_seconds: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    corrupt_kinds: tuple[str, ...] = CORRUPT_KINDS

    def __post_init__(self) -> None:
        for name in ("duplicate", "reorder", "corrupt"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"fault {name} is a fraction in [0, 1], got {getattr(self, name)}")
        if self.drop_every < 0 or self.stall_every < 0 or self.stall_seconds < 0:
            raise ValueError("fault drop_every, stall_every and stall_seconds must be >= 0")
        unknown = set(self.corrupt_kinds) - set(CORRUPT_KINDS)
        if unknown or not self.corrupt_kinds:
            raise ValueError(f"unknown corrupt kinds {sorted(unknown)}; choose from {', '.join(CORRUPT_KINDS)}")

    @property
    def enabled(self) -> bool:
        """Return True if any fault is on."""
        return bool(self.drop_every or self.stall_every or self.duplicate or self.reorder or self.corrupt)


@dataclass(frozen=True)
class FaultRecord:
    """One injected fault."""

    kind: str
    connection: int
    seq: int
    stream: str | None
    trade_id: int | None
    detail: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def to_json(self) -> dict[str, Any]:
        """Return the record as JSON-ready data."""
        d = asdict(self)
        d["at"] = self.at.isoformat()
        return d


class FaultLog:
    """Thread-safe, append-only list of :class:`FaultRecord`."""

    def __init__(self) -> None:
        self._records: list[FaultRecord] = []
        self._lock = threading.Lock()

    def add(self, record: FaultRecord) -> None:
        """Append a record."""
        with self._lock:
            self._records.append(record)

    def records(self, kind: str | None = None) -> list[FaultRecord]:
        """Return a copy of the records, optionally of one kind."""
        with self._lock:
            return [r for r in self._records if kind is None or r.kind == kind]

    def clear(self) -> None:
        """Forget all records."""
        with self._lock:
            self._records.clear()


Meta = tuple[str, int | None]  # (stream, trade id)


@dataclass
class _Entry:
    msg: bytes
    meta: Meta
    tags: list[tuple[str, str]] = field(default_factory=list)


class FaultInjector:
    """Applies a :class:`FaultConfig` to one connection's outgoing messages."""

    def __init__(self, config: FaultConfig, seed: int, connection: int, log: FaultLog) -> None:
        self.config = config
        self.connection = connection
        self.log = log
        self.seq = 0  # data messages sent on this connection
        self._rng = {k: np.random.default_rng([seed, connection, i]) for i, k in enumerate(("dup", "reorder", "corrupt", "kind"))}

    def transform(self, msgs: list[bytes], meta: list[Meta]) -> tuple[list[bytes], list[Meta]]:
        """Return the batch with duplicates, swaps and corruptions applied (and logged).

        Duplicates are made first, then adjacent messages swapped, then
        messages corrupted.  A record's ``seq`` is the message's 1-based
        position on the connection as the client receives it.
        """
        cfg = self.config
        if not (cfg.corrupt or cfg.duplicate or cfg.reorder) or not msgs:
            return msgs, meta
        entries = [_Entry(m, mt) for m, mt in zip(msgs, meta, strict=True)]
        if cfg.duplicate:
            dup = self._rng["dup"].random(len(entries)) < cfg.duplicate
            doubled: list[_Entry] = []
            for e, d in zip(entries, dup.tolist(), strict=True):
                doubled.append(e)
                if d:
                    doubled.append(_Entry(e.msg, e.meta, [("duplicate", "second copy")]))
            entries = doubled
        if cfg.reorder:
            swap = self._rng["reorder"].random(len(entries)) < cfg.reorder
            i = 0
            while i < len(entries) - 1:
                if swap[i]:
                    entries[i], entries[i + 1] = entries[i + 1], entries[i]
                    entries[i].tags.append(("reorder", f"moved before trade {entries[i + 1].meta[1]}"))
                    i += 2
                else:
                    i += 1
        if cfg.corrupt:
            hit = np.flatnonzero(self._rng["corrupt"].random(len(entries)) < cfg.corrupt)
            kinds = self._rng["kind"].integers(len(cfg.corrupt_kinds), size=len(hit))
            for i, k in zip(hit.tolist(), kinds.tolist(), strict=True):
                kind = cfg.corrupt_kinds[k]
                entries[i].msg = corrupt_message(entries[i].msg, kind)
                entries[i].tags.append(("corrupt", kind))
        for pos, e in enumerate(entries):
            for kind, detail in e.tags:
                self._record(kind, self.seq + 1 + pos, e.meta, detail)
        return [e.msg for e in entries], [e.meta for e in entries]

    def after_send(self, meta: Meta) -> tuple[float, bool]:
        """Count a sent message; return (stall seconds, drop now) for what comes next."""
        self.seq += 1
        cfg = self.config
        stall, drop = 0.0, False
        if cfg.stall_every and self.seq % cfg.stall_every == 0 and cfg.stall_seconds > 0:
            stall = cfg.stall_seconds
            self._record("stall", self.seq, meta, f"{stall:.3f}s after this message")
        if cfg.drop_every and self.seq % cfg.drop_every == 0:
            drop = True
            self._record("drop", self.seq, meta, "connection aborted after this message")
        return stall, drop

    def _record(self, kind: str, seq: int, meta: Meta, detail: str) -> None:
        self.log.add(FaultRecord(kind, self.connection, seq, meta[0], meta[1], detail))


def corrupt_message(msg: bytes, kind: str) -> bytes:
    """Return a corrupt variant of a trade message (raw or combined-stream form)."""
    if kind == "malformed_json":
        return msg[: max(1, len(msg) // 2)]
    doc = orjson.loads(msg)
    data = doc["data"] if isinstance(doc, dict) and "data" in doc else doc
    if kind == "missing_field":
        data.pop(("p", "q", "t", "T")[len(msg) % 4], None)
    else:
        what, key = kind.split("_")
        field_key = "p" if key == "price" else "q"
        data[field_key] = {"nan": "NaN", "negative": "-" + str(data.get(field_key, "1")), "zero": "0.00000000"}[what]
    return orjson.dumps(doc)


REST_FAULT_STATUSES = (429, 500, 502, 503, 504)
_REST_BODIES = {
    429: {"code": -1003, "msg": "Too many requests; current limit of IP is 6000 request weight per 1 MINUTE."},
    500: {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."},
    502: "<html><head><title>502 Bad Gateway</title></head></html>",
    503: {"code": -1008, "msg": "Server is currently overloaded with other requests. Please try again in a few "
                                "minutes."},
    504: "<html><head><title>504 Gateway Time-out</title></head></html>",
}


class RestFaults:
    """Fail the next N public REST requests (``GET /api/v3/...``) with an HTTP error, and log each.

    Set from Python (:meth:`fail_next`) or ``POST /replay/rest_faults {"count": N, "status": 503}``;
    ``count`` 0 clears.  A 429 carries Binance's ``Retry-After`` header; 502 and 504 an HTML page
    (a proxy's), the others Binance's JSON error.
    """

    def __init__(self, log: FaultLog) -> None:
        self.log = log
        self._left = 0
        self._status = 503
        self._lock = threading.Lock()

    def fail_next(self, count: int, status: int = 503) -> None:
        """Fail the next ``count`` REST requests with ``status`` (one of :data:`REST_FAULT_STATUSES`)."""
        if count < 0 or status not in REST_FAULT_STATUSES:
            raise ValueError(f"rest fault: count >= 0 and status one of {REST_FAULT_STATUSES}, got {count}, {status}")
        with self._lock:
            self._left, self._status = count, status

    @property
    def left(self) -> int:
        """Return how many requests are still to fail."""
        return self._left

    def take(self, path: str) -> tuple[int, Any] | None:
        """Return ``(status, body)`` if this request is to fail (and log it), else None."""
        with self._lock:
            if self._left <= 0:
                return None
            self._left -= 1
            status = self._status
        self.log.add(FaultRecord("rest_error", -1, 0, path, None, f"HTTP {status}"))
        return status, _REST_BODIES[status]
