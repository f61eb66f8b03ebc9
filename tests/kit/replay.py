"""Replay exchange fixtures: candle files, signed replay servers, an event-loop runner."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from flows.operators.features import WARMUP
from flows.timeframes import timeframe_ms

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run a coroutine to completion on a fresh event loop, failing after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def make_candles(n: int, interval_ms: int, seed: int = 1, start_ms: int = 1_704_067_200_000) -> pd.DataFrame:
    """Return ``n`` valid candles on a 0.01 price grid and 0.001 volume grid, one with zero volume."""
    rng = np.random.default_rng(seed)
    close = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.01, n))), 2)
    open_ = np.round(np.concatenate([[100.0], close[:-1]]), 2)
    high = np.round(np.maximum(open_, close) + rng.integers(0, 50, n) / 100, 2)
    low = np.round(np.minimum(open_, close) - rng.integers(0, 50, n) / 100, 2)
    volume = np.round(rng.uniform(0.5, 40, n), 3)
    volume[3] = 0.0
    high[3] = low[3] = close[3] = open_[3]
    open_[4] = close[3]
    high[4], low[4] = max(high[4], open_[4]), min(low[4], open_[4])
    ts = start_ms + interval_ms * np.arange(n)
    return pd.DataFrame({"ts": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume})


@contextmanager
def signed_replay(tmp_path: Path, hours: int, key: str, secret: str, balances: Mapping[str, float] | None = None
                  ) -> Iterator[tuple[Any, pd.DataFrame]]:
    """Run a replay exchange of ``hours`` synthetic 1h ABC/USDT candles that takes signed orders.

    Yields the running exchange and its candles; the account starts with ``balances`` (or the exchange's default).
    """
    from infra.replay_exchange import running_replay

    candles = make_candles(hours, 3_600_000)
    path = tmp_path / "ABC_USDT-1h.csv"
    candles.to_csv(path, index=False)
    account: dict[str, Any] = {} if balances is None else {"balances": dict(balances)}
    with running_replay(path, speed=0, rest_horizon="all", api_key=key, api_secret=secret, **account) as ex:
        yield ex, candles


def with_history(start: datetime, timeframe: str, bars: int = WARMUP) -> dict[str, datetime]:
    """Return replay settings that stream from ``start`` and hold ``bars`` + 2 ``timeframe`` bars of history before it.

    A fresh flow warms its features up on the exchange's klines before its first trade
    (``exchange.warmup_klines``, :mod:`flows.warmup`), as against Binance: the replay then has
    them, and its first streamed bar already has converged features.
    """
    return {"start": start - timedelta(milliseconds=(bars + 2) * timeframe_ms(timeframe)), "stream_start": start}


def history_klines(ex: Any, symbol: str, timeframe: str, start: datetime, bars: int = WARMUP) -> list[Any]:
    """Return the ``bars`` klines of ``symbol`` before ``start`` that a fresh flow warms up on, from replay ``ex``."""
    from flows.exchange.binance import make_binance
    from flows.exchange.klines import fetch_klines

    end = int(start.timestamp() * 1000)
    end -= end % timeframe_ms(timeframe)
    client = make_binance(ex.http_url, ex.ws_url)
    return list(fetch_klines(client, symbol, timeframe, end - bars * timeframe_ms(timeframe), end, closed_only=False))


def synthetic_with_history(live_s: int, timeframe: str = "1m", stream_start: datetime | None = None
                           ) -> dict[str, Any]:
    """Return synthetic replay settings: ``live_s`` seconds streamed after :func:`with_history`'s history."""
    at = stream_start or datetime(2024, 1, 1, 6, tzinfo=timezone.utc)
    window = with_history(at, timeframe)
    return {**window, "synthetic_duration_s": live_s + int((at - window["start"]).total_seconds())}
