"""The regime as a feature group: the stored regime is the decision step's, point in time.

The flow's rows (:class:`flows.operators.regime.RegimeRowEmitter`, what ``flows.live.regime_rows``
runs; fitted HMM with daily funding and Fear & Greed) equal the decision step's
:class:`~flows.operators.regime.RegimeFeed` at the same closes.  Perturbation: change every price
and daily value not yet known at t, and no row stored (history sink, local offline store) at or
before t changes.  Feast serving is in ``test_regime_live.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.feature_catalog import offline_dir, view_name
from flows.feature_groups import group
from flows.operators.regime import (
    REGIME_FEATURES,
    REGIMES,
    HmmRegime,
    RegimeFeed,
    RegimeRowEmitter,
    RegimeState,
    load_daily_inputs,
    state_rows,
)
from flows.records import FeatureRow
from flows.settings import Settings, load_settings
from flows.sinks.history import HistorySink
from tests.kit.regimes import perturbed_after, regime_market, write_daily
from tests.kit.repo import copy_feature_repo
from training.regime import fit_hmm, regime_inputs

SYMBOLS = ("BTC/USDT", "ETH/USDT")
DAYS = 60
G = group("regime")
VIEW = view_name(G.table, G.timeframes[0])


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray, Path, HmmRegime]:
    times, prices = regime_market(seed=5, days=DAYS)
    daily_dir = write_daily(tmp_path_factory.mktemp("daily"), seed=5, days=DAYS)
    x = regime_inputs(pd.Series(prices, index=times), load_daily_inputs(daily_dir))
    return times, prices, daily_dir, fit_hmm([x], ["trend", "vol", "funding", "sentiment"], states=4, seed=0)


def _flow_rows(times: np.ndarray, prices: np.ndarray, daily_dir: Path, model: HmmRegime) -> list[FeatureRow]:
    """The rows the live flow writes: the emitter over the reference symbol's closes."""
    em = RegimeRowEmitter(RegimeFeed(SYMBOLS[0], model, load_daily_inputs(daily_dir, 2.0)), SYMBOLS)
    return [r for ts, px in zip(times.tolist(), prices.tolist(), strict=True) for r in em.on_close(ts, px)]


def _decision_states(times: np.ndarray, prices: np.ndarray, daily_dir: Path, model: HmmRegime
                     ) -> list[RegimeState | None]:
    """The decision step's regime: its feed sees every close with all symbols' prices."""
    feed = RegimeFeed(SYMBOLS[0], model, load_daily_inputs(daily_dir, 2.0))
    return [feed.on_close(ts, {SYMBOLS[0]: px, SYMBOLS[1]: 1.0}) for ts, px in zip(times.tolist(), prices.tolist(),
                                                                                 strict=True)]


def _store(tmp: Path, rows: list[FeatureRow]) -> Settings:
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp / "var"), "CRYPTOSTREAM_PROFILE": "local",
                                  "CRYPTOSTREAM_FEAST_REPO": str(copy_feature_repo(tmp)),
                                  "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS)})
    sink = HistorySink(settings, flush_interval_s=float("inf")).build("regime-test", 0, 1)
    try:
        sink.write_batch(list(rows))
    finally:
        sink.close()
    return settings


def _stored(settings: Settings) -> pd.DataFrame:
    df = pd.read_parquet(offline_dir(settings.data_dir, G.table, G.timeframes[0]))
    return df[["symbol", "timeframe", "ts", *G.features]].sort_values(["symbol", "ts"]).reset_index(drop=True)


def test_the_flow_s_rows_are_the_decision_step_s_regime_at_each_sampled_close(
        market: tuple[np.ndarray, np.ndarray, Path, HmmRegime]) -> None:
    times, prices, daily_dir, model = market
    rows, states = _flow_rows(times, prices, daily_dir, model), _decision_states(times, prices, daily_dir, model)
    assert rows == state_rows(states, SYMBOLS)
    by_ts = {s.ts: s for s in states if s is not None}
    assert len(rows) == len(SYMBOLS) * len(by_ts) > len(SYMBOLS) * 24 * (DAYS - 31)
    for r in rows:
        s = by_ts[r.ts]
        assert (r.table, r.timeframe, tuple(r.values)) == (G.table, "1h", REGIME_FEATURES)
        assert REGIMES[int(r.values["regime_code"])] == s.label and r.values["regime_score"] == s.score
        assert tuple(r.values[f] for f in REGIME_FEATURES[2:]) == s.probs


def test_no_stored_regime_row_at_or_before_t_changes_when_later_data_changes(
        market: tuple[np.ndarray, np.ndarray, Path, HmmRegime], tmp_path: Path) -> None:
    times, prices, daily_dir, model = market
    t = int(times[45 * 24 + 5])
    a = _stored(_store(tmp_path / "a", _flow_rows(times, prices, daily_dir, model)))
    p2, d2 = perturbed_after(times, prices, daily_dir, t, tmp_path / "perturbed", seed=1)
    b = _stored(_store(tmp_path / "b", _flow_rows(times, p2, d2, model)))
    cut = pd.Timestamp(t, unit="ms", tz="UTC")
    assert (a.ts <= cut).sum() > 100
    pd.testing.assert_frame_equal(a[a.ts <= cut], b[b.ts <= cut], check_exact=True)
    assert not a[a.ts > cut].reset_index(drop=True).equals(b[b.ts > cut].reset_index(drop=True))
