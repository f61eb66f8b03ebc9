"""A local exchange that speaks Binance spot's protocol and replays market data.

``python -m infra.replay_exchange --data PATH --speed 60 --port 9000`` serves
REST (``/api/v3/...``) and websocket trade streams (``/ws``, ``/stream``) on
one port; ccxt and ccxt.pro reach it through :func:`make_binance`.  Data
modes: recorded messages (``.gz``), candle files expanded into trades, or a
seeded synthetic market.  See ``server.py`` for the endpoints, ``engine.py``
for the replay clock and ``faults.py`` for fault injection.
"""

from typing import Any

from infra.replay_exchange.config import ReplayConfig, load_data
from infra.replay_exchange.faults import CORRUPT_KINDS, FaultConfig, FaultRecord
from infra.replay_exchange.server import ReplayExchange, running_replay
from infra.replay_exchange.synthetic import SyntheticConfig
from infra.replay_exchange.tape import MarketData, TradeTape

__all__ = [
    "CORRUPT_KINDS",
    "SPOT_OPTIONS",
    "FaultConfig",
    "FaultRecord",
    "MarketData",
    "ReplayConfig",
    "ReplayExchange",
    "SyntheticConfig",
    "TradeTape",
    "binance_urls",
    "load_data",
    "make_binance",
    "running_replay",
]


def __getattr__(name: str) -> Any:
    """Import the ccxt helpers on first use, so the server starts without importing ccxt."""
    if name in ("SPOT_OPTIONS", "binance_urls", "make_binance"):
        from infra.replay_exchange import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
