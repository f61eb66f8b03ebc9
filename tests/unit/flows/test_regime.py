"""The regime classifier is point in time: nothing after t changes the label at t."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.operators.regime import (
    REGIMES,
    DailyInputs,
    HmmRegime,
    RegimeTracker,
    RuleRegime,
    classify,
    load_daily_inputs,
    load_model,
    regime_label,
)
from tests.kit.regimes import HOUR_MS, perturbed_after, regime_market, write_daily
from training.regime import fit_hmm, regime_inputs


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray, Path]:
    times, prices = regime_market(seed=3)
    return times, prices, write_daily(tmp_path_factory.mktemp("daily"), seed=3)


@pytest.fixture(scope="module")
def hmm(market: tuple[np.ndarray, np.ndarray, Path]) -> HmmRegime:
    times, prices, daily_dir = market
    x = regime_inputs(pd.Series(prices, index=times), load_daily_inputs(daily_dir))
    return fit_hmm([x], ["trend", "vol", "funding", "sentiment"], states=4, seed=0)


@pytest.mark.parametrize("kind", ["hmm", "rules"])
def test_the_label_at_t_does_not_change_when_data_after_t_changes(
        kind: str, market: tuple[np.ndarray, np.ndarray, Path], hmm: HmmRegime, tmp_path: Path) -> None:
    times, prices, daily_dir = market
    model = hmm if kind == "hmm" else RuleRegime()
    base = classify(times, prices, model, load_daily_inputs(daily_dir, 2.0))
    for i, t in enumerate((int(times[40 * 24 + 5]), int(times[90 * 24]), int(times[120 * 24 + 13]))):
        p2, d2 = perturbed_after(times, prices, daily_dir, t, tmp_path / f"p{i}", seed=i)
        again = classify(times, p2, model, load_daily_inputs(d2, 2.0))
        upto = int(np.searchsorted(times, t, side="right"))
        assert again[:upto] == base[:upto]
        assert again[upto:] != base[upto:]  # the perturbation did reach the labels after t


def test_smoothed_probabilities_would_fail_the_perturbation_test(
        market: tuple[np.ndarray, np.ndarray, Path], hmm: HmmRegime, tmp_path: Path) -> None:
    """The test has teeth: hmmlearn's smoothed posteriors (forward-backward) at t move with data after t."""
    from hmmlearn.hmm import GaussianHMM

    times, prices, daily_dir = market
    g = GaussianHMM(len(hmm.startprob), covariance_type="diag")
    g.startprob_, g.transmat_ = np.array(hmm.startprob), np.array(hmm.transmat)
    g.means_, g.covars_ = np.array(hmm.means), np.array(hmm.variances)
    t = int(times[90 * 24])

    def smoothed(p: np.ndarray, d: Path) -> np.ndarray:
        x = regime_inputs(pd.Series(p, index=times), load_daily_inputs(d))
        z = (x[list(hmm.inputs)].to_numpy() - np.array(hmm.center)) / np.array(hmm.scale)
        return g.predict_proba(z)[: int(np.searchsorted(x.index, t, side="right"))]

    p2, d2 = perturbed_after(times, prices, daily_dir, t, tmp_path / "p", seed=9)
    assert not np.allclose(smoothed(prices, daily_dir), smoothed(p2, d2))


def test_prices_alone_equal_the_model_restricted_to_trend_and_vol(
        market: tuple[np.ndarray, np.ndarray, Path], hmm: HmmRegime) -> None:
    """A missing daily input is marginalised: the same model without it is the model on trend and vol."""
    times, prices, _ = market
    alone = classify(times, prices, hmm, None)
    two = replace(hmm, inputs=("trend", "vol"), means=tuple(m[:2] for m in hmm.means),
                  variances=tuple(v[:2] for v in hmm.variances), center=hmm.center[:2], scale=hmm.scale[:2])
    assert alone == classify(times, prices, two, DailyInputs())
    labelled = [s for s in alone if s is not None]
    assert len(labelled) > 0.7 * len(times)
    assert all(-1.0 <= s.score <= 1.0 and abs(sum(s.probs) - 1.0) < 1e-9 for s in labelled)


def test_a_restored_tracker_goes_on_exactly(market: tuple[np.ndarray, np.ndarray, Path], hmm: HmmRegime) -> None:
    times, prices, daily_dir = market
    daily = load_daily_inputs(daily_dir)
    whole = classify(times, prices, hmm, daily)
    first = RegimeTracker(hmm)
    cut = 70 * 24 + 7
    for ts, px in zip(times[:cut].tolist(), prices[:cut].tolist(), strict=True):
        first.on_close(ts, px, daily.at(ts))
    second = RegimeTracker(hmm, first.snapshot())
    rest = [second.on_close(ts, px, daily.at(ts)) for ts, px in zip(times[cut:].tolist(), prices[cut:].tolist(),
                                                                       strict=True)]
    assert rest == whole[cut:]


def test_rules_label_trend_and_volatility() -> None:
    rules = RuleRegime(trend_days=2, vol_days=1)
    times = 1_600_000_000_000 // HOUR_MS * HOUR_MS + HOUR_MS * np.arange(1, 24 * 6)
    calm_up = 100 * np.exp(0.004 * np.arange(len(times)) + 0.001 * (-1) ** np.arange(len(times)))
    wild_down = 100 * np.exp(-0.004 * np.arange(len(times)) + 0.05 * (-1) ** np.arange(len(times)))
    assert classify(times, calm_up, rules)[-1].label == "bull/low vol"  # type: ignore[union-attr]
    assert classify(times, wild_down, rules)[-1].label == "bear/high vol"  # type: ignore[union-attr]
    assert classify(times, calm_up, rules)[-1].score == 1.0  # type: ignore[union-attr]
    assert classify(times[:47], calm_up[:47], rules)[-1] is None  # 2 days of samples not yet there


def test_between_samples_the_last_regime_holds(market: tuple[np.ndarray, np.ndarray, Path]) -> None:
    times, prices, _ = market
    five = np.arange(times[0], times[-1] + 1, 300_000, dtype=np.int64)
    px = np.interp(five, times, prices)
    px[five % HOUR_MS == 0] = prices[np.searchsorted(times, five[five % HOUR_MS == 0])]
    fine = classify(five, px, RuleRegime())
    hourly = dict(zip(times.tolist(), classify(times, prices, RuleRegime()), strict=True))
    for ts, s in zip(five.tolist(), fine, strict=True):
        assert s == hourly[ts // HOUR_MS * HOUR_MS]


def test_the_label_reads_direction_and_volatility_from_their_marginals() -> None:
    probs = np.array([0.3, 0.0, 0.0, 0.45, 0.25, 0.0])  # bull 0.3, sideways 0.45, bear 0.25; high vol 0.55
    assert regime_label(probs) == "sideways/high vol"
    assert regime_label(np.eye(len(REGIMES))[5]) == "bear/low vol"


def test_a_model_file_round_trips_and_a_bad_one_is_named(hmm: HmmRegime, tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text(hmm.to_json())
    assert load_model(tmp_path / "m.json") == hmm
    (tmp_path / "bad.json").write_text('{"kind": "lstm"}')
    with pytest.raises(ValueError, match="field 'kind'"):
        load_model(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="state_regimes"):
        replace(hmm, state_regimes=("bull",) * len(hmm.startprob))
