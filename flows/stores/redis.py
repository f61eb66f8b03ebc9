"""Redis: the event bus (one stream per decision table), the kill switch key and the model swap key.

Event bus: every record goes to the stream ``cryptostream:<table>`` (``XADD ... MAXLEN ~ N``,
one entry per record, added by a server-side script in one round trip per batch) for
dashboards and other consumers.

Redis may be unreachable for a while (restarted, network cut).  Then the event bus keeps the
documents it could not publish in memory (up to ``stores.event_backlog``, oldest dropped first
and counted) and publishes them, in order, before the next batch once Redis answers again; the
flow never waits for it beyond ``stores.redis_timeout_s`` and never stops for it.  A batch whose
connection broke half-way is sent again in full, so across an outage delivery is at least once
(a consumer keys records by their table's key).  The kill switch, unreadable, counts as engaged
(no new risk); the swap key, unreadable, raises :class:`~flows.stores.base.StoreUnavailable`, which
the per-bar swap check reads as "no change".
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import orjson

from flows.stores.base import KillStatus, StoreUnavailable, kill_value, parse_kill_value
from flows.stores.config import StoreConfig
from flows.stores.schema import COLUMNS, JSON_COLUMNS

log = logging.getLogger(__name__)

# XADD key MAXLEN ~ ARGV[1] * data ARGV[i] for each further argument; returns how many were added.
_XADD_MANY = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[i])
end
return #ARGV - 1
"""
XADD_CHUNK = 1000  # entries per script call: keeps each call short for other Redis clients


def stream_docs(table: str, rows: list[tuple[Any, ...]]) -> list[bytes]:
    """Return the Redis stream documents of a table's rows (JSON columns embedded as they were encoded)."""
    cols = COLUMNS[table]
    jcols = [i for i, c in enumerate(cols) if c in JSON_COLUMNS]
    dumps, fragment, opt = orjson.dumps, orjson.Fragment, orjson.OPT_SERIALIZE_NUMPY
    out = []
    for r in rows:
        doc = dict(zip(cols, r, strict=True))
        for i in jcols:
            v = r[i]
            if v is not None:
                doc[cols[i]] = fragment(v)
        out.append(dumps(doc, option=opt))
    return out


class RedisEventBus:
    """Streams ``cryptostream:<table>``, capped near ``maxlen`` entries each; rides out a Redis outage."""

    def __init__(self, url: str, maxlen: int, config: StoreConfig | None = None,
                 clock: Any = time.monotonic) -> None:
        import redis

        self.maxlen = maxlen
        self.config = config or StoreConfig()
        timeout = self.config.redis_timeout_s
        self.redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.xadd_many = self.redis.register_script(_XADD_MANY)
        self.backlog: deque[tuple[str, list[bytes]]] = deque()  # (table, documents) not yet published
        self.pending = 0  # documents in the backlog
        self.dropped = 0  # documents dropped because the backlog was full
        self.clock = clock
        self.retry_at = 0.0  # after a failure, the next publish before this time only queues
        self.pause = 0.0

    def encode(self, table: str, rows: list[tuple[Any, ...]]) -> list[bytes]:
        """Return the stream documents of a table's rows."""
        return stream_docs(table, rows)

    def publish(self, docs: dict[str, list[bytes]]) -> None:
        """Queue the documents after any backlog and publish all of it (one round trip) when Redis answers."""
        for table, entries in docs.items():
            if entries:
                self.backlog.append((table, entries))
                self.pending += len(entries)
        self._trim()
        if self.backlog and self.clock() >= self.retry_at:
            self._send()

    def _send(self) -> None:
        import redis

        batch = list(self.backlog)
        pipe = self.redis.pipeline(transaction=False)
        for table, entries in batch:
            for i in range(0, len(entries), XADD_CHUNK):
                self.xadd_many(keys=[f"cryptostream:{table}"], args=[self.maxlen, *entries[i:i + XADD_CHUNK]],
                               client=pipe)
        try:
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.pause = min(max(self.pause * 2, 0.2), self.config.retry_backoff_max_s)
            self.retry_at = self.clock() + self.pause
            log.warning("event bus: Redis unreachable (%s); %d documents kept, retrying", exc, self.pending)
            return
        for _ in batch:  # the backlog may only have grown at its end meanwhile (one writer thread)
            self.backlog.popleft()
        if self.pause:
            log.warning("event bus: Redis reachable again; published %d kept documents",
                        sum(len(e) for _, e in batch))
        self.pending -= sum(len(e) for _, e in batch)
        self.pause, self.retry_at = 0.0, 0.0

    def _trim(self) -> None:
        """Drop the oldest documents beyond ``stores.event_backlog`` (counted, logged)."""
        over = self.pending - self.config.event_backlog
        while over > 0 and self.backlog:
            table, entries = self.backlog[0]
            if len(entries) <= over:
                self.backlog.popleft()
                gone = len(entries)
            else:
                self.backlog[0] = (table, entries[over:])
                gone = over
            over -= gone
            self.pending -= gone
            self.dropped += gone
            log.error("event bus: backlog full (stores.event_backlog=%d): %d documents of %s dropped "
                      "(%d so far)", self.config.event_backlog, gone, table, self.dropped)

    def close(self) -> None:
        """Publish what is kept (one last attempt), say what could not be, and close the connection."""
        if self.backlog:
            self._send()
        if self.pending or self.dropped:
            log.error("event bus closed with %d documents unpublished and %d dropped (Redis unreachable)",
                      self.pending, self.dropped)
        self.redis.close()


class RedisKillSwitch:
    """A kill switch that is engaged while a Redis key exists."""

    def __init__(self, redis_url: str, key: str, timeout_s: float = 1.0) -> None:
        """Connect lazily to ``redis_url``; ``key`` is the switch."""
        import redis

        self.key = key
        self.client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def active(self) -> bool:
        """Return whether the switch is engaged (True when Redis cannot be read)."""
        import redis

        try:
            return bool(self.client.exists(self.key))
        except redis.RedisError as exc:
            log.warning("kill switch %s unreadable, treating it as engaged: %s", self.key, exc)
            return True

    def status(self) -> KillStatus:
        """Return the switch's status with its reason and flatten flag (engaged when unreadable)."""
        import redis

        try:
            raw: Any = self.client.get(self.key)
        except redis.RedisError as exc:
            return KillStatus(True, f"kill switch unreadable: {exc}")
        return parse_kill_value(raw)

    def engage(self, reason: str, flatten: bool = False) -> None:
        """Engage the switch."""
        self.client.set(self.key, kill_value(reason, flatten))

    def release(self) -> None:
        """Release the switch."""
        self.client.delete(self.key)

    def where(self) -> str:
        """Say where the switch is."""
        return f"redis key {self.key}"

    def __repr__(self) -> str:  # the URL may hold a password: never shown
        return f"RedisKillSwitch(key={self.key!r})"


class RedisSwapKey:
    """The model swap trigger as a Redis key."""

    def __init__(self, url: str, key: str, timeout_s: float = 2.0) -> None:
        import redis

        self.key = key
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def read(self) -> bytes | None:
        """Return the key's value (:class:`StoreUnavailable` when Redis cannot be read)."""
        import redis

        try:
            value: Any = self.client.get(self.key)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"swap key {self.key} unreadable: {exc}") from exc
        return value

    def write(self, value: bytes) -> None:
        """Set the key (:class:`StoreUnavailable` when Redis cannot be written)."""
        import redis

        try:
            self.client.set(self.key, value)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"swap key {self.key} not written: {exc}") from exc


class RedisChangeFeed:
    """:class:`flows.stores.base.ChangeFeed` of the ``timescale`` profile: the event bus's streams."""

    def __init__(self, url: str, tables: tuple[str, ...]) -> None:
        import redis

        self.keys = [f"cryptostream:{t}" for t in tables]
        self.redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)

    def token(self) -> str:
        """Return the newest entry id of every stream (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        for k in self.keys:
            pipe.xrevrange(k, count=1)
        return ",".join(r[0][0].decode() if r else "-" for r in pipe.execute())

    def recent(self, table: str, count: int) -> list[dict[str, Any]]:
        """Return the newest ``count`` records of the table's stream, newest first."""
        entries: Any = self.redis.xrevrange(f"cryptostream:{table}", count=count)
        return [orjson.loads(fields[b"data"]) for _, fields in entries]

    def where(self) -> str:
        """Say which streams are read."""
        return f"Redis streams {', '.join(self.keys)}"
