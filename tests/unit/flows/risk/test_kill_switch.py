"""Kill switch: file and real Redis switches, the CLI, and blocking within one bar in the decision step.

The in-flow test runs the real components (``build_deps``: portfolio, risk
engine, paper broker, the profile's switch) through the decision step twice on
the same seeded market: once without the switch, once engaging it right after a
close.  The signal turns bullish on the next close: without the switch that
close places buy orders, with it none (and a ``kill_switch`` rejection per
symbol); with ``flatten`` that close sells the positions and the next bar fills
them to flat.  The Redis tests need ``REDIS_URL`` (``set -a; eval "$(infra/up)"; set +a``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.operators.decisions import DecisionStep
from flows.risk.engine import Rejection
from flows.risk.kill_switch import KillStatus, from_settings, main
from flows.settings import Settings, load_settings
from flows.stores.files import FileKillSwitch
from flows.stores.redis import RedisKillSwitch
from flows.wiring import build_deps
from tests.kit import risk_stream as stream

TF = stream.TF
SYMBOLS = ("BTC/USDT", "ETH/USDT")
KILL_AT = 40  # the switch is engaged right after this close; the signal turns bullish on the next


def redis_url() -> str:
    url = os.environ.get("CRYPTOSTREAM_REDIS_URL") or os.environ.get("REDIS_URL")
    if not url:
        pytest.skip('needs Redis: run under `set -a; eval "$(infra/up)"; set +a` (REDIS_URL)')
    return url


@pytest.fixture
def redis_key() -> Iterator[str]:
    import redis

    url = redis_url()
    key = f"test:risk:{uuid.uuid4().hex}:kill"
    yield key
    redis.Redis.from_url(url).delete(key)


def run(settings: Settings, engage: Any, closes: int = KILL_AT + 3) -> list[list[Any]]:
    """Drive the decision step close by close; return the items of each close (``engage`` after KILL_AT)."""
    step = DecisionStep(SYMBOLS, TF, build_deps(settings))
    out = []
    for c, bars, preds in stream.closes(SYMBOLS, closes, lambda c, _: 1 if c > KILL_AT else -1):
        items: list[Any] = [x for b in bars for x in step.on_bar(b)]
        out.append(items + step.on_predictions(preds))
        if c == KILL_AT:
            engage()
    return out


def orders(items: list[Any], close: int) -> list[Any]:
    """Orders decided at close number ``close`` (not the updates of earlier ones)."""
    return [o for o in items if hasattr(o, "client_order_id") and hasattr(o, "intent")
            and o.intent.bar_ts == close * TF]


def local(tmp_path: Path, **env: str) -> Settings:
    return load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
                              "CRYPTOSTREAM_RISK__SIZING__METHOD": "fixed_fraction",
                              "CRYPTOSTREAM_RISK__SIZING__FIXED_FRACTION": "0.2", **env})


def check_blocks_within_one_bar(settings: Settings, switch: Any, control: list[list[Any]]) -> None:
    assert not any(orders(items, c) for c, items in enumerate(control[:KILL_AT], 1)), "neutral: no trade before"
    buys = orders(control[KILL_AT], KILL_AT + 1)
    assert {o.intent.symbol for o in buys} == set(SYMBOLS) and all(o.intent.side == "buy" for o in buys)
    killed = run(settings, lambda: switch.engage("test", flatten=False))
    assert switch.active()
    for c, items in enumerate(killed[KILL_AT:], KILL_AT + 1):
        assert orders(items, c) == [], "the kill switch let a risk-increasing order through"
    blocked = [r for r in killed[KILL_AT] if isinstance(r, Rejection)]
    assert {(r.symbol, r.rule) for r in blocked} == {(s, "kill_switch") for s in SYMBOLS}
    assert all(r.allowed == 0.0 and r.requested > 0 and r.reason for r in blocked)


def test_file_switch_blocks_within_one_bar(tmp_path: Path) -> None:
    settings = local(tmp_path)
    switch = from_settings(settings)
    assert isinstance(switch, FileKillSwitch) and switch.path == tmp_path / "KILL"
    check_blocks_within_one_bar(settings, switch, run(settings, lambda: None))


def test_flatten_closes_positions_on_the_next_close(tmp_path: Path) -> None:
    settings = local(tmp_path, CRYPTOSTREAM_RISK__KILL_SWITCH__FLATTEN="true")
    switch = from_settings(settings)
    # Engage after the buys filled (one close later): the next close sells everything, the bar after fills it.
    step = DecisionStep(SYMBOLS, TF, build_deps(settings))
    last: dict[int, list[Any]] = {}
    for c, bars, preds in stream.closes(SYMBOLS, KILL_AT + 4, lambda c, _: 1 if c > KILL_AT else -1):
        for b in bars:
            step.on_bar(b)
        last[c] = step.on_predictions(preds)
        if c == KILL_AT + 1:
            assert all(q > 0 for q in step.deps.portfolio.snapshot().positions.values())
            switch.engage("flatten test", flatten=True)
    sells = orders(last[KILL_AT + 2], KILL_AT + 2)
    assert {o.intent.symbol for o in sells} == set(SYMBOLS) and all(o.intent.side == "sell" for o in sells)
    assert step.deps.portfolio.snapshot().positions == {}, "filled to flat on the bar after"


def test_file_switch_engage_status_release(tmp_path: Path) -> None:
    sw = FileKillSwitch(tmp_path / "sub" / "KILL")
    assert not sw.active() and sw.status() == KillStatus(False)
    sw.engage("incident 42", flatten=True)
    st = sw.status()
    assert sw.active() and st.active and st.reason == "incident 42" and st.flatten and st.since and bool(st)
    sw.release()
    assert not sw.active() and not sw.status()
    (tmp_path / "sub" / "KILL").write_text("not json")
    assert sw.status().active, "any file engages the switch"


def test_cli_on_status_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for k in [k for k in os.environ if k.startswith("CRYPTOSTREAM_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("CRYPTOSTREAM_DATA_DIR", str(tmp_path))
    assert main(["on", "--reason", "maintenance", "--flatten"]) == 0
    assert "ENGAGED" in capsys.readouterr().out and (tmp_path / "KILL").exists()
    assert main(["status"]) == 0 and "maintenance; flatten=True" in capsys.readouterr().out
    assert main(["off"]) == 0 and "off" in capsys.readouterr().out and not (tmp_path / "KILL").exists()
    monkeypatch.setenv("CRYPTOSTREAM_RISK__KILL_SWITCH__NOPE", "1")
    assert main(["status"]) == 2 and "kill_switch.nope" in capsys.readouterr().err


@pytest.mark.integration
def test_redis_switch_engage_status_release_and_fail_closed(redis_key: str) -> None:
    sw = RedisKillSwitch(redis_url(), redis_key)
    assert not sw.active() and not sw.status()
    sw.engage("exchange incident", flatten=True)
    st = sw.status()
    assert sw.active() and st.reason == "exchange incident" and st.flatten
    assert redis_url() not in repr(sw)
    sw.release()
    assert not sw.active()
    down = RedisKillSwitch("redis://127.0.0.1:1/0", redis_key, timeout_s=0.2)
    assert down.active() and down.status().active and "unreadable" in down.status().reason


@pytest.mark.integration
def test_redis_switch_blocks_within_one_bar(tmp_path: Path, redis_key: str) -> None:
    settings = local(tmp_path, CRYPTOSTREAM_PROFILE="timescale", REDIS_URL=redis_url(),
                     CRYPTOSTREAM_RISK__KILL_SWITCH__REDIS_KEY=redis_key)
    switch = from_settings(settings)
    assert isinstance(switch, RedisKillSwitch) and switch.key == redis_key
    check_blocks_within_one_bar(settings, switch, run(settings, lambda: None))
