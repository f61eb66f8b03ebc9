"""python -m training.regime: a seeded HMM fit, states mapped deterministically, saved beside the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.operators.regime import (
    REGIMES,
    classify,
    load_daily_inputs,
    load_model,
    resolve_model,
    state_rows,
)
from tests.kit.regimes import regime_market, write_daily
from training.regime import fit_hmm, main, regime_inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    times, prices = regime_market(seed=5)
    return regime_inputs(pd.Series(prices, index=times), load_daily_inputs(write_daily(
        tmp_path_factory.mktemp("daily"), seed=5)))


def test_the_same_seed_gives_the_same_model_with_states_in_a_canonical_order(inputs: pd.DataFrame) -> None:
    names = ["trend", "vol", "funding", "sentiment"]
    a, b = fit_hmm([inputs], names, states=4, seed=1), fit_hmm([inputs], names, states=4, seed=1)
    assert a.to_json() == b.to_json()
    raw = np.asarray(a.means) * np.asarray(a.scale) + np.asarray(a.center)
    assert (np.diff(raw[:, 0]) >= 0).all()  # ordered by mean trend
    for (trend, vol, *_), regime in zip(raw, a.state_regimes, strict=True):
        direction = "bull" if trend > a.trend_band else "bear" if trend < -a.trend_band else "sideways"
        assert regime == f"{direction}/{'high vol' if vol > a.vol_split else 'low vol'}"
    assert a.state_regimes[-1].startswith("bull") and len(set(a.state_regimes)) >= 2  # the drifts are found
    with pytest.raises(ValueError, match="complete rows"):
        fit_hmm([inputs.iloc[:100]], names, states=4)


def test_the_cli_fits_saves_latest_and_reports(tmp_path: Path) -> None:
    times, prices = regime_market(seed=5)
    candles = tmp_path / "BTC_USDT-1h.parquet"
    pd.DataFrame({"ts": pd.to_datetime(times - 3_600_000, unit="ms", utc=True), "open": prices, "high": prices * 1.01,
                  "low": prices * 0.99, "close": prices, "volume": 1.0}).to_parquet(candles)
    daily = write_daily(tmp_path / "daily", seed=5)
    reg = tmp_path / "registry"
    assert main(["report", str(candles), "--registry", str(reg), "--out", str(tmp_path / "r.md")]) == 2  # none yet
    assert main(["fit", str(candles), "--daily-dir", str(daily), "--registry", str(reg), "--states", "4",
                 "--end", "2030-01-01"]) == 0
    model = resolve_model("latest", reg)
    assert model == load_model(next((tmp_path / "regime").glob("*/regime.json")))  # beside the registry
    assert not (reg / "regime").exists()  # not inside: the registry's tools read a manifest in every family
    assert model.inputs == ("trend", "vol", "funding", "sentiment") and model.fit["seed"] == 0
    out = tmp_path / "REGIME.md"
    assert main(["report", str(candles), "--daily-dir", str(daily), "--registry", str(reg), "--out", str(out),
                 "--end", "2030-01-01"]) == 0
    text = out.read_text()
    assert "Transition matrix" in text and all(f"| {r} |" in text for r in REGIMES)
    # backfill: the regime group's rows for the file's hours, in the settings' offline store (local profile)
    var = tmp_path / "var"
    (tmp_path / "s.yaml").write_text(f"data_dir: {var}\nsymbols: [BTC/USDT, ETH/USDT]\n")
    assert main(["backfill", str(candles), "--daily-dir", str(daily), "--registry", str(reg), "--end", "2030-01-01",
                 "--config", str(tmp_path / "s.yaml")]) == 0
    stored = pd.read_parquet(var / "offline" / "regime_features_1h").sort_values(["ts", "symbol"])
    want = state_rows(classify(times, prices, model, load_daily_inputs(daily)), ("BTC/USDT", "ETH/USDT"))
    assert len(stored) == len(want) > 1000
    assert stored["regime_code"].tolist() == [r.values["regime_code"] for r in want]
    assert stored["ts"].tolist() == [pd.Timestamp(r.ts, unit="ms", tz="UTC") for r in want]
