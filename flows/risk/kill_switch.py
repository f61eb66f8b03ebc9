"""The kill switch: a Redis key (``timescale`` profile) or a file (``local``) whose presence stops new risk.

While engaged, the risk engine lets through only risk-reducing orders, and with
``flatten`` closes every position; the decision step reads the switch once per
bar close, so it takes effect within one bar.  The value holds why and when it
was engaged (JSON: ``reason``, ``flatten``, ``since`` in ms).  A switch that cannot
be read (Redis down) counts as engaged: failing closed is the safe side.

Command line (the profile of the settings decides Redis or file)::

    python -m flows.risk.kill_switch on --reason "exchange incident" [--flatten]
    python -m flows.risk.kill_switch off
    python -m flows.risk.kill_switch status
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)


class KillStatus(NamedTuple):
    """Whether the switch is engaged, why, since when (ms) and whether to flatten; truthy when engaged."""

    active: bool
    reason: str = ""
    flatten: bool = False
    since: int | None = None

    def __bool__(self) -> bool:
        return self.active


def _value(reason: str, flatten: bool) -> str:
    return json.dumps({"reason": reason, "flatten": bool(flatten), "since": int(time.time() * 1000)})


def _parse(raw: str | bytes | None) -> KillStatus:
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


class FileKillSwitch:
    """A kill switch that is engaged while ``path`` exists."""

    def __init__(self, path: str | Path) -> None:
        """Use ``path`` as the switch (its directory is made on engage)."""
        self.path = Path(path)

    def active(self) -> bool:
        """Return whether the switch is engaged."""
        return self.path.exists()

    def status(self) -> KillStatus:
        """Return the switch's status with its reason and flatten flag."""
        try:
            return _parse(self.path.read_bytes())
        except FileNotFoundError:
            return KillStatus(False)
        except OSError as exc:
            return KillStatus(True, f"kill switch file unreadable: {exc}")

    def engage(self, reason: str, flatten: bool = False) -> None:
        """Engage the switch (atomically: written aside, then renamed)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(_value(reason, flatten))
        os.replace(tmp, self.path)

    def release(self) -> None:
        """Release the switch."""
        self.path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"FileKillSwitch({str(self.path)!r})"


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
        return _parse(raw)

    def engage(self, reason: str, flatten: bool = False) -> None:
        """Engage the switch."""
        self.client.set(self.key, _value(reason, flatten))

    def release(self) -> None:
        """Release the switch."""
        self.client.delete(self.key)

    def __repr__(self) -> str:  # the URL may hold a password: never shown
        return f"RedisKillSwitch(key={self.key!r})"


def from_settings(settings: Any) -> FileKillSwitch | RedisKillSwitch:
    """Return the profile's switch: the Redis key in ``timescale``, else the file (default ``<data_dir>/KILL``)."""
    cfg = settings.risk.kill_switch
    if settings.profile == "timescale" and settings.redis_url is not None:
        return RedisKillSwitch(settings.redis_url.get_secret_value(), cfg.redis_key)
    return FileKillSwitch(cfg.file or Path(settings.data_dir) / "KILL")


def main(argv: list[str] | None = None) -> int:
    """Engage, release or show the kill switch of the current settings."""
    parser = argparse.ArgumentParser(prog="python -m flows.risk.kill_switch", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("on", "off", "status"))
    parser.add_argument("--reason", default="engaged from the command line", help="why (stored with the switch)")
    parser.add_argument("--flatten", action="store_true", help="also close every position while engaged")
    parser.add_argument("--config", help="YAML settings file (default $CRYPTOSTREAM_CONFIG)")
    args = parser.parse_args(argv)
    from flows.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config)
        settings.require_servers()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    switch = from_settings(settings)
    if args.action == "on":
        switch.engage(args.reason, args.flatten)
    elif args.action == "off":
        switch.release()
    st = switch.status()
    where = switch.path if isinstance(switch, FileKillSwitch) else f"redis key {switch.key}"
    if st.active:
        print(f"kill switch ENGAGED ({where}): {st.reason or '-'}; flatten={st.flatten}")
    else:
        print(f"kill switch off ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
