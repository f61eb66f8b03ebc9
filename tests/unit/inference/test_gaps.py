"""Bar times through the scorer: the streaming LSTM starts a symbol afresh after a gap, a repeat or a step back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inference.lstm_stream import LstmRunner
from inference.manifest import ManifestError
from inference.scorer import Scorer, bar_ms
from tests.kit.lstm_data import FEATS, SYMBOLS
from tests.kit.registries import LSTM_CFG, SERVICES, registered  # noqa: F401 - fixture

B = LSTM_CFG.burn_in  # bars after a zero state without a prediction
HOUR_MS = 3_600_000


def _bars(held: pd.DataFrame) -> list[tuple[int, dict[str, np.ndarray]]]:
    """(bar close ms, symbol -> features) per bar time of the held-out rows, in time order."""
    out = []
    for t, bar in held.groupby("event_timestamp", sort=True):
        out.append((int(pd.Timestamp(t).value // 1_000_000),
                    {s: r for s, r in zip(bar.symbol, bar[FEATS].to_numpy(), strict=True)}))
    return out


def _lstm(root: Path) -> Scorer:
    return Scorer.from_registry(root, ["lstm"], SERVICES)


def _run(scorer: Scorer, bars: Sequence[tuple[int, dict[str, np.ndarray]]], with_ts: bool = True) -> np.ndarray:
    """LSTM P(up) ``[bars, SYMBOLS]`` (NaN where not given or not available)."""
    out = np.full((len(bars), len(SYMBOLS)), np.nan)
    for i, (ts, rows) in enumerate(bars):
        p = scorer.score(rows, bar_ts=ts if with_ts else None)["lstm"]
        out[i, [SYMBOLS.index(s) for s in p.symbols]] = p.probability
    return out


@pytest.fixture(scope="module")
def bars(registered) -> list[tuple[int, dict[str, np.ndarray]]]:  # noqa: F811
    return _bars(registered[1])


def test_consecutive_bar_times_change_nothing(registered, bars) -> None:  # noqa: F811
    root = registered[0]
    with_ts = _run(_lstm(root), bars)
    np.testing.assert_array_equal(with_ts, _run(_lstm(root), bars, with_ts=False))
    assert np.isfinite(with_ts).sum() == 3 * (len(bars) - B)


def test_after_a_gap_each_symbol_restarts_like_a_fresh_scorer(registered, bars) -> None:  # noqa: F811
    root, cut, skip = registered[0], 20, 3
    before, after = bars[:cut], bars[cut + skip:]
    gapped = _run(_lstm(root), [*before, *after])[cut:]
    np.testing.assert_array_equal(gapped, _run(_lstm(root), after))  # bit for bit: zero state after the gap
    assert np.isnan(gapped[:B]).all() and np.isfinite(gapped[B:]).all()
    stale = _run(_lstm(root), [*before, *after], with_ts=False)[cut:]
    assert np.isfinite(stale[0]).all()  # without bar times the gap goes unnoticed


def test_a_step_back_or_a_repeated_bar_restarts_the_symbol(registered, bars) -> None:  # noqa: F811
    root, back = registered[0], 12
    replay = _run(_lstm(root), [*bars[:30], *bars[back:]])[30:]
    np.testing.assert_array_equal(replay, _run(_lstm(root), bars[back:]))
    repeat = _run(_lstm(root), [*bars[:30], *bars[29:]])[30:]
    np.testing.assert_array_equal(repeat, _run(_lstm(root), bars[29:]))
    assert np.isnan(repeat[:B]).all() and np.isfinite(repeat[B:]).all()


def test_only_the_symbol_with_the_gap_restarts(registered, bars) -> None:  # noqa: F811
    root, missing = registered[0], SYMBOLS.index("ETH/USDT")
    holes = [(ts, {s: r for s, r in rows.items() if not (s == SYMBOLS[missing] and 20 <= i < 22)})
             for i, (ts, rows) in enumerate(bars)]
    got, full = _run(_lstm(root), holes), _run(_lstm(root), bars)
    others = [k for k in range(len(SYMBOLS)) if k != missing]
    np.testing.assert_array_equal(got[:, others], full[:, others])
    assert np.isnan(got[20:22 + B, missing]).all()
    assert np.isfinite(got[22 + B:, missing]).all()


def test_ensemble_scorer_passes_bar_times_to_its_lstm(registered, bars) -> None:  # noqa: F811
    from inference.runners import EnsembleScorer
    from inference.scorer import open_session
    from training.export.ensemble_onnx import export_ensemble
    from training.models.ensemble import Ensemble, EnsembleConfig

    members = ("lightgbm", "lstm", "gnn")
    graph = export_ensemble(Ensemble(EnsembleConfig(members, (1.0, 1.0, 1.0), "fixed")),
                            np.random.default_rng(0).uniform(0.3, 0.7, (50, 3)))
    scorer = Scorer.from_registry(registered[0], members, SERVICES)
    ens = EnsembleScorer(scorer, scorer.runners["lstm"].manifest, members, open_session(graph.onnx))
    cut, skip = 20, 2
    for ts, rows in [*bars[:cut], *bars[cut + skip:]][:cut + 1]:
        out = ens.score(rows, bar_ts=ts)
    assert np.isnan(out["lstm"].probability).all()  # restarted after the gap
    assert np.isfinite(out["ensemble"].probability).all()  # the other members carry the ensemble


@pytest.mark.parametrize("bad", [1.7e12, "2024-01-01", pd.Timestamp("2024-01-01", tz="UTC"), True])
def test_bar_ts_must_be_integer_milliseconds(registered, bars, bad) -> None:  # noqa: F811
    with pytest.raises(TypeError, match="bar_ts must be the bar close in integer epoch milliseconds"):
        _lstm(registered[0]).score(bars[0][1], bar_ts=bad)
    _lstm(registered[0]).score(bars[0][1], bar_ts=np.int64(bars[0][0]))  # numpy integers are fine


def test_bar_length_comes_from_the_config_or_the_service_name(registered) -> None:  # noqa: F811
    runner = _lstm(registered[0]).runners["lstm"]
    assert isinstance(runner, LstmRunner)
    m = runner.manifest
    assert "timeframe" not in m.config and bar_ms(m) == HOUR_MS  # from "lstm_1h_v1"
    from dataclasses import replace

    assert bar_ms(replace(m, config={**m.config, "timeframe": "5m"})) == 300_000
    unknown = replace(m, feature_service="custom")
    assert bar_ms(unknown) is None
    runner.manifest, runner.bar_ms = unknown, None
    with pytest.raises(ManifestError, match="bar_ts gaps cannot be checked"):
        runner.score(["BTC/USDT"], np.zeros((1, len(FEATS))), bar_ts=HOUR_MS)


def test_history_through_seq_onnx_equals_scoring_bar_by_bar_across_gaps(registered, bars) -> None:  # noqa: F811
    root = registered[0]
    holes = [(ts, {s: r for s, r in rows.items() if not (s == "ETH/USDT" and 20 <= i < 22)})
             for i, (ts, rows) in enumerate(bars)]
    timeline = [*holes[:30], *holes[25:]]  # a missing ETH bar, then a step back for every symbol
    want = _run(_lstm(root), timeline)
    runner = _lstm(root).runners["lstm"]
    assert isinstance(runner, LstmRunner)
    got = np.full_like(want, np.nan)
    for a, b in ((0, 1), (1, 27), (27, len(timeline))):  # history continues from the carried state
        part = timeline[a:b]
        syms = [tuple(rows) for _, rows in part]
        xs = [np.stack(list(rows.values())) for _, rows in part]
        for i, (sy, p) in enumerate(zip(syms, runner.history(syms, xs, [ts for ts, _ in part]), strict=True)):
            got[a + i, [SYMBOLS.index(s) for s in sy]] = p
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.nanmax(np.abs(got - want)) <= 1e-6
    assert np.isnan(want[20:22 + B, SYMBOLS.index("ETH/USDT")]).all() and np.isnan(want[30:30 + B]).all()
