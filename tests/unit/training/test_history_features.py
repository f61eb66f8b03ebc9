"""History features over whole arrays equal the flow's streaming operators bit for bit, record for record."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flows.operators.cross_asset import CROSS_FEATURES
from flows.operators.features import FEATURES
from flows.records import Bar
from flows.replay import bar_time_chunks
from training.backfill import bars_from_frame, operator_records
from training.history_features import HistoryFeatures, history_records

ASSETS = ("BTC", "ETH", "SOL", "BNB", "XRP")


def _same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert type(x) is type(y)
        assert x == y, (x, y)  # every float with ==: bit for bit (no NaN after warm-up)


def _bars(symbol: str, n: int, seed: int, start: int = 0, tf_ms: int = 3_600_000) -> list[Bar]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return [Bar(symbol, "1h", start + i * tf_ms, c, c * 1.01, c * 0.99, c, float(v), c * v, i % 7, c, v / 3)
            for i, (c, v) in enumerate(zip(close.tolist(), rng.uniform(0, 10, n).round(0).tolist(), strict=True))]


def test_history_records_equal_the_operators_on_real_candles(shared_data) -> None:
    frames = {f"{a}/USDT": pd.read_parquet(shared_data / "binance-spot-1h" / f"{a}_USDT-1h.parquet").iloc[:4000]
              for a in ASSETS}
    for df in frames.values():
        df["ts"] = df["ts"].astype("int64") // 1_000_000 if df["ts"].dtype.kind == "M" else df["ts"]

    def streams() -> dict:
        return {s: bars_from_frame(s, "1h", df) for s, df in frames.items()}

    want, got = list(operator_records(streams(), "1h")), list(history_records(streams(), "1h"))
    assert sum(1 for r in want if getattr(r, "table", "") == "cross_asset_features") > 3000 * len(ASSETS)
    _same(want, got)


def test_flat_prices_zero_volume_and_a_late_symbol_match_too() -> None:
    flat = [b._replace(close=50.0, high=50.0, low=50.0, volume=0.0, vwap=50.0) for b in _bars("BTC/USDT", 150, 1)]
    cases = [
        {"BTC/USDT": flat, "ETH/USDT": _bars("ETH/USDT", 150, 2)},  # constant series: rsi 50, %b 0.5, corr 0
        {"BTC/USDT": _bars("BTC/USDT", 150, 3), "ETH/USDT": _bars("ETH/USDT", 100, 4, start=50 * 3_600_000)},
        {"ETH/USDT": _bars("ETH/USDT", 40, 5), "BTC/USDT": _bars("BTC/USDT", 140, 6)},  # never warm; no reference first
    ]
    gap = _bars("SOL/USDT", 200, 7)
    cases.append({"BTC/USDT": _bars("BTC/USDT", 200, 8), "SOL/USDT": gap[:120] + gap[121:]})  # a hole stops cross
    for case in cases:
        want = list(operator_records({s: iter(b) for s, b in case.items()}, "1h"))
        _same(want, list(history_records({s: iter(b) for s, b in case.items()}, "1h")))


def _from_records(records: list, symbols: tuple[str, ...], feed: list[str], tf_ms: int) -> tuple[list, np.ndarray]:
    """Return the bars per close (symbols in order) and the feed values per close and symbol, read off the records."""
    bars: dict[int, dict[str, Bar]] = {}
    values: dict[tuple[int, str], dict[str, float]] = {}
    for r in records:
        if isinstance(r, Bar):
            bars.setdefault(r.ts + tf_ms, {})[r.symbol] = r
        else:
            values.setdefault((r.ts, r.symbol), {}).update(r.values)
    closes = sorted(bars)
    return ([tuple(bars[t][s] for s in symbols) for t in closes],
            np.array([[values[t, s][f] for f in feed] for t in closes for s in symbols]))


def test_chunks_cut_as_the_replay_and_matrices_hold_the_records_values_bit_for_bit() -> None:
    gap = _bars("SOL/USDT", 700, 9)
    cases = [
        {"ETH/USDT": _bars("ETH/USDT", 700, 1), "BTC/USDT": _bars("BTC/USDT", 700, 2),
         "SOL/USDT": _bars("SOL/USDT", 690, 3)},  # configured order unlike the names'; SOL ends early
        {"BTC/USDT": _bars("BTC/USDT", 700, 4), "SOL/USDT": gap[:500] + gap[503:]},  # a hole stops cross rows
        {"SOL/USDT": gap[:400] + gap[399:], "BTC/USDT": _bars("BTC/USDT", 700, 7)},  # a bar twice: SOL's index runs ahead
        {"BTC/USDT": _bars("BTC/USDT", 700, 5), "ETH/USDT": _bars("ETH/USDT", 600, 6, start=100 * 3_600_000)},
    ]  # the last: a late symbol, whose first bar time the cross step waits on for ever (no regular chunk)
    feed = ["rv_15", "ret_1", "corr_btc_60", "dow_cos", "ret_rel_xs", "macd", "beta_btc_60", "trade_count"]
    for n_case, case in enumerate(cases):
        symbols = tuple(case)
        for chunk in (1, 7, 64):
            hist = HistoryFeatures(case, "1h")
            want = list(bar_time_chunks(HistoryFeatures(case, "1h").records(), chunk, 3_600_000))
            pieces = list(hist.chunks(chunk))
            assert len(pieces) == len(want)
            regular = 0
            for piece, records in zip(pieces, want, strict=True):
                assert piece.closes == sorted({r.ts + 3_600_000 for r in records if isinstance(r, Bar)})
                kinds = [(r.ts + 3_600_000, r.symbol, "bar") if isinstance(r, Bar) else (r.ts, r.symbol, r.table)
                         for r in records]
                complete = len(set(kinds)) == len(kinds) == len(piece.closes) * len(symbols) * 3  # bar, 2 rows each
                assert piece.regular == complete
                if not piece.regular:
                    _same(records, list(hist.records(piece.lo, piece.hi)))
                    continue
                regular += 1
                assert complete
                for columns in (feed, [*FEATURES, *CROSS_FEATURES]):  # gathered columns; blocks of columns
                    bars, x = hist.matrix(piece, columns)
                    want_bars, want_x = _from_records(records, symbols, columns, 3_600_000)
                    assert bars == want_bars
                    assert x.shape == want_x.shape and x.tobytes() == want_x.tobytes()
            assert (regular > 0) == (n_case < 3)
