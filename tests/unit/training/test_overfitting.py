"""Deflated Sharpe ratio and PBO against the published numbers and constructed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.overfitting import (
    deflated_sharpe,
    expected_max_sharpe,
    pbo_cscv,
    probabilistic_sharpe,
)


def test_the_worked_example_of_bailey_and_lopez_de_prado_2014() -> None:
    # 1,250 daily returns, annualised Sharpe 2.5, 100 trials whose annualised Sharpe variance is 0.5,
    # skewness -3, kurtosis 10: SR0 = 0.1132 per day and DSR = 0.9004 (the paper's section 4).
    sr = 2.5 / math.sqrt(250)
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert probabilistic_sharpe(sr, 1250, -3.0, 10.0, sr0) == pytest.approx(0.9004, abs=5e-4)


def test_one_trial_is_not_deflated_and_more_trials_deflate_more() -> None:
    r = np.random.default_rng(1).normal(0.001, 0.01, 2000)
    one, many = deflated_sharpe(r, 1, 0.05), deflated_sharpe(r, 500, 0.05)
    assert one.sr0 == 0.0 and one.excess == one.sharpe
    assert many.sr0 > 0 and many.probability < one.probability


def test_pbo_of_pure_noise_is_about_one_half_and_of_a_real_edge_near_zero() -> None:
    # one noise matrix is one draw of a wide distribution; over many draws the PBO averages one half
    draws = [pbo_cscv(np.random.default_rng(s).normal(0.0, 0.01, (800, 20)), 8) for s in range(12)]
    assert 0.4 <= float(np.mean(draws)) <= 0.6
    noise = np.random.default_rng(7).normal(0.0, 0.01, (1200, 20))
    edged = noise.copy()
    edged[:, 3] += 0.004  # one trial has a real, persistent edge
    assert pbo_cscv(edged, 10) < 0.05


def test_pbo_refuses_bad_shapes() -> None:
    with pytest.raises(ValueError, match="two trials"):
        pbo_cscv(np.zeros((100, 1)))
    with pytest.raises(ValueError, match="even"):
        pbo_cscv(np.zeros((100, 3)), 5)


def test_sample_moments_that_break_the_variance_fall_back_to_normal_returns() -> None:
    # skew -40 at a Sharpe of -0.05 makes 1 - skew * SR + (kurt - 1) / 4 * SR^2 negative
    p = probabilistic_sharpe(-0.05, 1000, -40.0, 200.0)
    assert p == pytest.approx(probabilistic_sharpe(-0.05, 1000, 0.0, 3.0))
    assert 0.0 <= p <= 1.0


def test_a_flat_curve_shows_no_skill() -> None:
    d = deflated_sharpe(np.zeros(500), 10, 0.05)
    assert d.sharpe == 0.0 and d.probability == 0.0 and d.sr0 > 0 and d.excess == -d.sr0
