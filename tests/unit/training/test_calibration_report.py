"""training.calibration_report: reliability bins and scores that tell calibrated from miscalibrated."""

from __future__ import annotations

import numpy as np

from training.calibration_report import reliability, scores


def test_a_calibrated_forecast_has_a_small_ece_and_an_overconfident_one_does_not() -> None:
    rng = np.random.default_rng(5)
    p = rng.uniform(0.3, 0.7, 50_000)
    y = (rng.uniform(size=p.size) < p).astype(float)
    good = scores(p, y)
    over = scores(np.clip(0.5 + 2 * (p - 0.5), 0, 1), y)  # twice as far from one half as the truth
    assert good["ece"] < 0.01 < over["ece"]
    assert good["brier"] < over["brier"] and good["logloss"] < over["logloss"]
    rel = reliability(p, y)
    assert list(rel.index) == ["0.3-0.4", "0.4-0.5", "0.5-0.6", "0.6-0.7"]
    assert int(rel["rows"].sum()) == p.size
    assert np.allclose(rel["predicted"], rel["observed"], atol=0.02)
