"""The weekly job promotes a challenger only through the gate and past the champion (issue 20, item 2).

A replay exchange serves a seeded synthetic market; the daily job at 2024-01-01 registers the
first champion, then the weekly job runs a week later on the new bars.  Tiny models (settings
``retrain.quick``, LightGBM alone, a day of 1m bars): what a challenger must show is set through
the settings, so each outcome is forced by a real figure against a real threshold.  One test turns
the tactical policy on (``retrain.policies``; ``--quick``: a 3,000-step agent, seeded).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flows.exchange.replay_process import control, replay_process
from flows.settings import Settings, load_settings
from inference.manifest import pointed_timeframes
from inference.promotions import read_events
from tests.kit.http_receiver import receiver
from training.registry.__main__ import main as registry_main
from training.retrain import RetrainJob, main, windows

DAY1 = datetime(2024, 1, 1, tzinfo=UTC)
WEEK_LATER = datetime(2024, 1, 8, tzinfo=UTC)
LENIENT = {f"CRYPTOSTREAM_RETRAIN__GATE__{k}": v for k, v in
           {"MIN_SHARPE": "-1e9", "MIN_DEFLATED_SHARPE": "-1e9", "MIN_DSR": "0", "MAX_DRAWDOWN": "1",
            "MIN_WIN_RATE": "0", "MIN_POSITIVE_WINDOWS": "0"}.items()}


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The replay exchange (its clock at the end of the data) and the first champion, trained by the daily job."""
    data = tmp_path_factory.mktemp("retrain")
    args = ["--synthetic", "BTC/USDT,ETH/USDT,SOL/USDT", "--seed", "11", "--speed", "max", "--rest-horizon", "all",
            "--start", "2023-12-29T00:00:00Z", "--end", "2024-01-09T00:00:00Z"]
    with replay_process(args) as ex, pytest.MonkeyPatch.context() as mp:
        control(ex.http_url, "seek", time=int(datetime(2024, 1, 9, tzinfo=UTC).timestamp() * 1000))
        env = {"CRYPTOSTREAM_DATA_DIR": str(data), "CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url,
               "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url, "CRYPTOSTREAM_BARS__TIMEFRAMES": "1m",
               "CRYPTOSTREAM_SCORING__POLICY_FAMILY": "", "CRYPTOSTREAM_RETRAIN__MEMBERS": "lightgbm",
               "CRYPTOSTREAM_RETRAIN__QUICK": "true", "CRYPTOSTREAM_RETRAIN__DAILY_DAYS": "1",
               "CRYPTOSTREAM_RETRAIN__WEEKLY_DAYS": "1", "CRYPTOSTREAM_RETRAIN__COMPARE_DAYS": "0.25"}
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("CRYPTOSTREAM_CONFIG", raising=False)
        first = RetrainJob(settings(LENIENT), "daily", DAY1)()
        assert first.promoted, first
        yield {"root": data / "registry", "data": data, "champion": first.challenger}


def settings(extra: dict[str, str]) -> Settings:
    return load_settings(env={**os.environ, **extra})


def pointed(root: Path) -> dict[str, str | None]:
    return {f: pointed_timeframes(root, f).get("1m") for f in ("lightgbm", "ensemble")}


def test_the_job_trains_before_the_comparison_window_and_judges_on_it() -> None:
    start, split, end = windows(datetime(2024, 1, 8, 0, 0, 30, tzinfo=UTC), "1m", 1.0, 0.25)
    assert (start, split, end) == (datetime(2024, 1, 6, 18, tzinfo=UTC), datetime(2024, 1, 7, 18, tzinfo=UTC),
                                   datetime(2024, 1, 8, tzinfo=UTC))


def test_a_worse_challenger_is_recorded_and_not_promoted(market) -> None:
    root, champion = market["root"], pointed(market["root"])
    out = RetrainJob(settings({**LENIENT, "CRYPTOSTREAM_RETRAIN__MARGIN": "1e9"}), "weekly", WEEK_LATER)()
    assert not out.promoted and out.refused.startswith("compare: sharpe") and out.exit_code == 1
    assert pointed(root) == champion  # the champion stays
    assert set(out.figures) == {"challenger", "champion"}
    compare = [e for e in read_events(root, "1m") if e.kind == "retrain:compare"][-1]
    assert not compare.ok and compare.versions == out.challenger and "margin 1e+09" in compare.detail["reason"]
    assert not any((root / f / v).exists() for f, v in out.challenger.items())  # staged only


def test_a_challenger_failing_the_gate_is_not_promoted_whatever_the_comparison(market) -> None:
    root, champion = market["root"], pointed(market["root"])
    strict = {**LENIENT, "CRYPTOSTREAM_RETRAIN__GATE__MIN_SHARPE": "1e9", "CRYPTOSTREAM_RETRAIN__MARGIN": "-1e9"}
    out = RetrainJob(settings(strict), "weekly", WEEK_LATER)()
    assert not out.promoted and out.refused.startswith("gate: sharpe") and "champion" not in out.figures
    assert pointed(root) == champion
    gate = [e for e in read_events(root, "1m") if e.kind == "retrain:gate"][-1]
    assert not gate.ok and "needs > 1e+09" in gate.detail["reason"]


def test_a_challenger_that_passes_the_gate_and_beats_the_champion_is_promoted_and_flows_are_told(market) -> None:
    root, before = market["root"], pointed(market["root"])
    with receiver() as got:
        beats = {**LENIENT, "CRYPTOSTREAM_RETRAIN__MARGIN": "-1e9", "CRYPTOSTREAM_ALERTS__WEBHOOK_URL": got.url}
        out = RetrainJob(settings(beats), "weekly", WEEK_LATER)()
    assert out.promoted and out.exit_code == 0 and pointed(root) == out.challenger != before
    swap = market["data"] / "cryptostream_models_swap"  # the local profile's swap key (scoring.swap_key)
    assert swap.read_text().startswith("1m ") and out.challenger["ensemble"] in swap.read_text()
    kinds = [e.kind for e in read_events(root, "1m")][-8:]
    assert kinds == ["retrain:start", "retrain:backfill", "retrain:train", "retrain:export", "retrain:gate",
                     "retrain:compare", "promote", "retrain:promote"]
    titles = [body["title"] for _, body in got.requests]
    assert titles[0] == "1m retrain:start" and titles[-1] == "1m retrain:promote"
    verdict = next((root / "ensemble" / out.challenger["ensemble"] / "verdicts").glob("*.json")).read_text()
    assert '"passed": true' in verdict  # the gate's verdict travels with the promoted version


def test_a_failing_step_leaves_the_champion_and_says_which(market, monkeypatch) -> None:
    root, champion = market["root"], pointed(market["root"])
    monkeypatch.setenv("CRYPTOSTREAM_EXCHANGE__HTTP_URL", "http://127.0.0.1:9")  # nothing listens there
    assert main(["weekly", "--now", "2024-01-08T00:00:00Z"]) == 2
    assert pointed(root) == champion
    last = read_events(root, "1m")[-1]
    assert last.kind == "retrain:backfill" and not last.ok and "NetworkError" in last.detail["message"]


POLICY = "rl_tactical"


def test_the_weekly_job_retrains_the_tactical_policy_and_promotes_it_only_with_the_models(market, capsys) -> None:
    """Policies on: the weekly job trains, exports (parity), judges and promotes the policy with the models."""
    root = market["root"]
    models_before, policy_before = pointed(root), pointed_timeframes(root, POLICY).get("1m")
    with_policy = {**LENIENT, "CRYPTOSTREAM_SCORING__POLICY_FAMILY": POLICY, "CRYPTOSTREAM_RETRAIN__POLICIES": "true"}
    out = RetrainJob(settings({**with_policy, "CRYPTOSTREAM_RETRAIN__MARGIN": "-1e9"}), "weekly", WEEK_LATER)()
    assert out.promoted, out
    assert set(out.challenger) == {"lightgbm", "ensemble", POLICY}
    assert pointed_timeframes(root, POLICY).get("1m") == out.challenger[POLICY]
    assert {**pointed(root), POLICY: out.challenger[POLICY]} == out.challenger
    events = read_events(root, "1m")
    for kind in ("retrain:train", "retrain:export", "retrain:gate", "promote", "retrain:promote"):
        assert [e for e in events if e.kind == kind][-1].versions[POLICY] == out.challenger[POLICY], kind
    swap = (market["data"] / "cryptostream_models_swap").read_text()
    assert f"{POLICY}={out.challenger[POLICY]}" in swap
    verdict = next((root / POLICY / out.challenger[POLICY] / "verdicts").glob("*.json")).read_text()
    assert '"passed": true' in verdict
    capsys.readouterr()
    assert registry_main(["verify", "--timeframe", "1m"]) == 0  # the policy observes the ensemble's service
    assert registry_main(["show", POLICY, "--timeframe", "1m"]) == 0
    shown = capsys.readouterr().out  # its lineage: window, hashes, its own figures, verdict, events
    assert "best_mean_reward" in shown and "gate         PASS" in shown and "1m promote by" in shown

    champion = {**pointed(root), POLICY: pointed_timeframes(root, POLICY).get("1m")}
    reseeded = {**with_policy, "CRYPTOSTREAM_RETRAIN__SEED": "8", "CRYPTOSTREAM_RETRAIN__MARGIN": "1e9"}
    worse = RetrainJob(settings(reseeded), "weekly", WEEK_LATER)()  # another challenger, short of the margin
    assert not worse.promoted and worse.refused.startswith("compare: ") and POLICY in worse.challenger
    assert worse.challenger[POLICY] != champion[POLICY]
    assert {**pointed(root), POLICY: pointed_timeframes(root, POLICY).get("1m")} == champion
    compare = [e for e in read_events(root, "1m") if e.kind == "retrain:compare"][-1]
    assert not compare.ok and compare.versions[POLICY] == worse.challenger[POLICY]
    assert not (root / POLICY / worse.challenger[POLICY]).exists()  # recorded, staged only

    assert registry_main(["rollback", "--timeframe", "1m"]) == 0  # undoes the promotion, the policy's too
    assert pointed(root) == models_before and pointed_timeframes(root, POLICY).get("1m") == policy_before
