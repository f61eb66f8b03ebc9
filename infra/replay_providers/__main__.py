"""``python -m infra.replay_providers --data DIR [--host H] [--port P]``: serve the daily providers."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from infra.replay_providers.server import ProviderReplay


async def _serve(data: Path, host: str, port: int) -> None:
    replay = ProviderReplay(data)
    print(f"provider replay on {await replay.start(host, port)} from {data}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await replay.stop()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve until interrupted."""
    p = argparse.ArgumentParser(prog="python -m infra.replay_providers", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="folder of fear_greed.csv, hashrate.csv, difficulty.csv")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100)
    a = p.parse_args(argv)
    try:
        asyncio.run(_serve(a.data, a.host, a.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
