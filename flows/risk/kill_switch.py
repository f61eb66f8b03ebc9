"""The kill switch: a Redis key (``timescale`` profile) or a file (``local``) whose presence stops new risk.

The switches themselves are stores (``flows.stores.files.FileKillSwitch``,
``flows.stores.redis.RedisKillSwitch``), chosen by :func:`flows.stores.open_stores`.

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
import sys
from typing import Any

from flows.cli import HelpFormatter
from flows.stores.base import KillStatus, KillSwitch

__all__ = ["KillStatus", "KillSwitch", "from_settings", "main"]


def from_settings(settings: Any) -> KillSwitch:
    """Return the profile's switch (:meth:`flows.stores.Stores.kill_switch`): a Redis key or a file."""
    from flows.stores import open_stores

    return open_stores(settings).kill_switch()


def main(argv: list[str] | None = None) -> int:
    """Engage, release or show the kill switch of the current settings."""
    parser = argparse.ArgumentParser(prog="python -m flows.risk.kill_switch", description=__doc__.split("\n")[0],
        formatter_class=HelpFormatter)
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
    where = switch.where()
    if st.active:
        print(f"kill switch ENGAGED ({where}): {st.reason or '-'}; flatten={st.flatten}")
    else:
        print(f"kill switch off ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
