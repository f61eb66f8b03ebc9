"""A fresh start warms up on the exchange's klines: the first live bar's features are a long history's (defect 10).

The replay exchange serves 1m klines of the 600 minutes before the live market of
``tests.kit.live_flow``; the flow (its own trades from a testing source) warms every
symbol up on the last ``exchange.warmup_klines`` of them.  Its features must exist from
the first bar it builds and equal, within 1e-6, those of one engine fed the whole kline
history and then the flow's own bars.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
from bytewax.testing import TestingSource, run_main

from flows.exchange.binance import make_binance
from flows.exchange.klines import fetch_klines
from flows.live import build_flow
from flows.operators.features import FEATURES, WARMUP, FeatureEngine
from flows.records import Bar
from flows.settings import load_settings
from infra.replay_exchange.server import running_replay
from tests.kit.live_flow import REPO, SYMBOLS, T0, market
from tests.kit.replay import make_candles
from tests.kit.repo import copy_feature_repo

HISTORY = 600  # minutes of klines before the live market
OPEN = T0 - T0 % 60_000  # the first live minute


def _table(var, name: str) -> list[dict]:
    rows = [r for f in sorted((var / "offline" / name).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: (r["symbol"], r["ts"]))


def _ms(t) -> int:
    return int(t.timestamp() * 1000)


def test_a_fresh_start_warms_up_on_klines_and_its_first_features_are_converged(tmp_path) -> None:
    from flows import feast_store

    data = tmp_path / "candles"
    data.mkdir()
    for i, sym in enumerate(SYMBOLS):
        candles = make_candles(HISTORY, 60_000, seed=10 + i, start_ms=OPEN - HISTORY * 60_000)
        candles[["open", "high", "low", "close"]] *= (600.0, 30.0, 1.5)[i]
        candles.to_parquet(data / f"{sym.replace('/', '_')}-1m.parquet")
    REPO["path"] = copy_feature_repo(tmp_path)
    batches = market(minutes=30)
    with running_replay(sorted(data.iterdir()), speed=0, rest_horizon="all") as ex:
        settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"),
                                      "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
                                      "CRYPTOSTREAM_FEAST_REPO": str(REPO["path"]),
                                      "CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url,
                                      "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url})
        assert settings.exchange.warmup_klines == WARMUP - 1  # the first live bar is the first with features
        feast_store.apply(settings)
        run_main(build_flow(settings, TestingSource(batches), warmup=True))
        client = make_binance(ex.http_url, ex.ws_url)
        klines = {s: list(fetch_klines(client, s, "1m", OPEN - HISTORY * 60_000, OPEN, closed_only=False))
                  for s in SYMBOLS}
    bars, feats = _table(tmp_path / "var", "bars_1m"), _table(tmp_path / "var", "bar_features_1m")
    cross = _table(tmp_path / "var", "cross_asset_features_1m")
    assert len(bars) == 3 * 30 - 3  # the last minute stays open; no kline is stored as a bar
    assert len(feats) == len(bars)  # a feature row from the first bar the flow builds
    assert len(cross) == len(bars)  # and cross-asset rows: the first bar has its return (from the last kline)
    for sym in SYMBOLS:
        assert len(klines[sym]) == HISTORY
        engine = FeatureEngine("1m")
        for k in klines[sym]:
            engine.update(k)
        live = [r for r in bars if r["symbol"] == sym]
        want = {}
        for r in live:
            bar = Bar(sym, "1m", _ms(r["ts"]), r["open"], r["high"], r["low"], r["close"], r["volume"],
                      r["quote_volume"], r["trade_count"], r["vwap"], r["taker_buy_volume"])
            f = engine.update(bar)
            assert f is not None
            want[bar.ts + 60_000] = np.array([f[n] for n in FEATURES])
        got = {_ms(r["ts"]): np.array([r[n] for n in FEATURES]) for r in feats if r["symbol"] == sym}
        assert sorted(got) == sorted(want)
        assert min(got) == OPEN + 60_000  # the close of the first bar the flow built
        worst = max(float(np.abs(got[t] - want[t]).max()) for t in got)
        assert worst <= 1e-6, (sym, worst)
