"""The decision step's regime: every context carries the regime known at its close, rows and status show it."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from flows.operators.decisions import DecisionStep
from flows.operators.regime import RegimeFeed, RuleRegime, classify
from flows.records import Bar, Decided, PortfolioRow, Prediction, Status
from flows.settings import Settings, SettingsError, load_settings
from flows.wiring import build_deps

TF = 60_000
SYMBOLS = ("BTC/USDT", "ETH/USDT")
RULES = RuleRegime(trend_days=0.1, vol_days=0.05, trend_band=0.01, high_vol=5.0)  # 2.4 h trend, 1.2 h vol


def _settings(tmp_path: Path, **env: str) -> Settings:
    return load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"),
                              "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS), **env})


def _btc(k: int) -> float:
    return 100.0 * (1 - 0.0005 * k)  # falling: a bear market once the trend window fills


def _bars(k: int) -> list[Bar]:
    return [Bar(s, "1m", k * TF, px, px + 0.1, px - 0.1, px, 50.0, 50.0 * px, 10, px, 25.0)
            for s, px in (("BTC/USDT", _btc(k)), ("ETH/USDT", 50.0))]


def _pred(sym: str, k: int) -> Prediction:
    return Prediction(sym, "1m", (k + 1) * TF, {}, 0.7, 0.4, 1, float("nan"), {}, 0.0, 0.0005)


def _run(step: DecisionStep, ks: range) -> list[Any]:
    out: list[Any] = []
    for k in ks:
        out += step.on_predictions([_pred(s, k) for s in SYMBOLS])
        for b in _bars(k):
            out += step.on_bar(b)
    return out


def test_contexts_carry_the_regime_known_at_their_close(tmp_path: Path) -> None:
    deps = build_deps(_settings(tmp_path))
    deps.regime = RegimeFeed("BTC/USDT", RULES)
    out = _run(DecisionStep(SYMBOLS, TF, deps), range(400))
    times = [(k + 1) * TF for k in range(400)]
    expected = dict(zip(times, classify(times, [_btc(k) for k in range(400)], RULES), strict=True))
    rows = [o for o in out if isinstance(o, PortfolioRow)]
    assert [r.state["regime"] for r in rows] == [None if expected[r.ts] is None else expected[r.ts].label
                                                 for r in rows]
    bear = [r.ts for r in rows if r.state["regime"] == "bear/low vol"]
    assert bear and bear[0] == 4 * 3_600_000  # the first hourly sample with 2.4 h of samples behind it
    decided = {(d.prediction.symbol, d.prediction.ts): d for d in out if isinstance(d, Decided)}
    before, after = decided[("BTC/USDT", bear[0] - TF)], decided[("BTC/USDT", bear[0])]
    assert not any("regime" in r for r in before.reasons)
    assert "against regime -1.00: x0.5" in after.reasons  # the legacy rule scales a long against a bear market
    assert after.target_fraction == pytest.approx(before.target_fraction * 0.5)
    status = [o for o in out if isinstance(o, Status) and o.ts == bear[0]][0]
    assert status.regime == "bear/low vol" and status.text.endswith("regime=bear/low vol")


def test_a_restored_step_goes_on_with_the_same_regime(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    whole_deps = build_deps(settings)
    whole_deps.regime = RegimeFeed("BTC/USDT", RULES)
    whole = _run(DecisionStep(SYMBOLS, TF, whole_deps), range(400))
    first_deps = build_deps(settings)
    first_deps.regime = RegimeFeed("BTC/USDT", RULES)
    first = DecisionStep(SYMBOLS, TF, first_deps)
    _run(first, range(250))
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    again_deps = build_deps(settings)
    again_deps.regime = RegimeFeed("BTC/USDT", RULES)
    rest = _run(DecisionStep.from_snapshot(snap, again_deps), range(250, 400))

    def regimes(out: list[Any]) -> list[tuple[int, Any]]:
        return [(o.ts, o.state["regime"]) for o in out if isinstance(o, PortfolioRow)]

    assert regimes(rest) == [r for r in regimes(whole) if r[0] > 250 * TF]


def test_settings_choose_the_regime_and_name_a_bad_symbol(tmp_path: Path) -> None:
    assert build_deps(_settings(tmp_path)).regime is None  # off by default: regime stays None
    feed = build_deps(_settings(tmp_path, CRYPTOSTREAM_REGIME__SOURCE="rules")).regime
    assert feed is not None and feed.symbol == "BTC/USDT" and isinstance(feed.model, RuleRegime)
    with pytest.raises(SettingsError, match="regime.symbol: XRP/USDT is not traded"):
        build_deps(_settings(tmp_path, CRYPTOSTREAM_REGIME__SOURCE="rules", CRYPTOSTREAM_REGIME__SYMBOL="XRP/USDT"))
    with pytest.raises(SettingsError, match="no fitted regime model"):
        build_deps(_settings(tmp_path, CRYPTOSTREAM_REGIME__SOURCE="model"))


def test_closes_before_a_backtests_start_warm_the_regime_up(tmp_path: Path) -> None:
    """A backtest's warm-up closes are not traded, but the regime sees them, as the live flow does."""
    from flows.records import Close

    def closes(ks: range) -> list[Close]:
        return [Close((k + 1) * TF, tuple(_bars(k)), tuple(_pred(s, k) for s in SYMBOLS)) for k in ks]

    settings = _settings(tmp_path)
    deps = [build_deps(settings) for _ in range(2)]
    for d in deps:
        d.regime = RegimeFeed("BTC/USDT", RULES)
    whole, warmed = DecisionStep(SYMBOLS, TF, deps[0]), DecisionStep(SYMBOLS, TF, deps[1])
    everything = whole.on_closes(closes(range(400)))
    warmed.warm(closes(range(250)))
    traded = warmed.on_closes(closes(range(250, 400)))
    first = [o.state["regime"] for o in traded if isinstance(o, PortfolioRow)]
    assert first[0] is not None
    assert first == [o.state["regime"] for o in everything if isinstance(o, PortfolioRow) and o.ts > 250 * TF]
