"""Redis: the event bus (one stream per decision table), the kill switch key and the model swap key.

Event bus: every record goes to the stream ``cryptostream:<table>`` (``XADD ... MAXLEN ~ N``,
one entry per record, added by a server-side script in one round trip per batch) for
dashboards and other consumers.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from flows.stores.base import KillStatus, kill_value, parse_kill_value
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
    """Streams ``cryptostream:<table>``, capped near ``maxlen`` entries each."""

    def __init__(self, url: str, maxlen: int) -> None:
        import redis

        self.maxlen = maxlen
        self.redis = redis.Redis.from_url(url)
        self.xadd_many = self.redis.register_script(_XADD_MANY)

    def encode(self, table: str, rows: list[tuple[Any, ...]]) -> list[bytes]:
        """Return the stream documents of a table's rows."""
        return stream_docs(table, rows)

    def publish(self, docs: dict[str, list[bytes]]) -> None:
        """Add the documents in one round trip (one script call per :data:`XADD_CHUNK` entries of a table)."""
        pipe = self.redis.pipeline(transaction=False)
        for table, entries in docs.items():
            for i in range(0, len(entries), XADD_CHUNK):
                self.xadd_many(keys=[f"cryptostream:{table}"], args=[self.maxlen, *entries[i:i + XADD_CHUNK]],
                               client=pipe)
        pipe.execute()

    def close(self) -> None:
        """Close the connection."""
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

    def __init__(self, url: str, key: str) -> None:
        import redis

        self.key = key
        self.client = redis.Redis.from_url(url)

    def read(self) -> bytes | None:
        """Return the key's value."""
        value: Any = self.client.get(self.key)
        return value


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
