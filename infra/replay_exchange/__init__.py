"""A local exchange that speaks Binance spot's protocol and replays market data.

``python -m infra.replay_exchange --data PATH --speed 60 --port 9000`` serves
REST (``/api/v3/...``) and websocket trade streams (``/ws``, ``/stream``) on
one port; ccxt and ccxt.pro reach it like Binance with its URLs moved onto
the replay's host (``flows.exchange.binance.make_binance`` does that).  Data
modes: recorded messages (``.gz``), candle files expanded into trades, or a
seeded synthetic market.  See ``server.py`` for the endpoints, ``engine.py``
for the replay clock and ``faults.py`` for fault injection.
"""

from infra.replay_exchange.config import ReplayConfig, load_data
from infra.replay_exchange.faults import CORRUPT_KINDS, FaultConfig, FaultRecord
from infra.replay_exchange.server import ReplayExchange, running_replay
from infra.replay_exchange.synthetic import SyntheticConfig
from infra.replay_exchange.tape import MarketData, TradeTape

__all__ = [
    "CORRUPT_KINDS",
    "FaultConfig",
    "FaultRecord",
    "MarketData",
    "ReplayConfig",
    "ReplayExchange",
    "SyntheticConfig",
    "TradeTape",
    "load_data",
    "running_replay",
]

