"""A gap fill retries transient REST errors, and a hole it could not fill is asked for again later (issue 17).

Against the replay exchange with its REST fault injection (``RestFaults``: the next N
``GET /api/v3/...`` answer 429, 5xx or a proxy's HTML page), through ccxt, no mocks.
Before, the first such error ended the fill: the trades of that gap went to the dead
letters and nothing ever asked for them again, not even after a restart.
"""

from __future__ import annotations

import numpy as np
import pytest

from flows.operators.parse import parse_messages
from flows.records import Trade
from flows.settings import SettingsError, load_settings
from flows.sources.id_gaps import RETRY_AFTER_MS, IdGapRepair
from flows.sources.rest_fill import FillRetry, TradeFiller
from infra.replay_exchange.server import running_replay

SYMBOLS = {"BTCUSDT": "BTC/USDT"}
FAST = FillRetry(attempts=4, backoff_s=0.01, backoff_max_s=0.02)


@pytest.fixture(scope="module")
def replay():
    with running_replay(None, synthetic=("BTC/USDT",), synthetic_duration_s=900, speed=0, rest_horizon="all",
                        seed=3) as ex:
        yield ex


@pytest.fixture
def clean(replay) -> list[Trade]:
    tape = replay.data.tapes["BTCUSDT"]
    trades, dead = parse(tape.payloads(np.arange(len(tape)), combined=False))
    assert dead == [] and len(trades) > 3000
    return trades


def parse(msgs):
    return parse_messages(msgs, SYMBOLS, 1_800_000_000_000, source="binance.rest")


@pytest.mark.parametrize("status", [503, 429, 502, 504])
def test_transient_errors_are_retried_with_a_doubling_pause_and_the_fill_is_complete(replay, clean, status) -> None:
    pauses: list[float] = []
    filler = TradeFiller(replay.http_url, None, retry=FAST, sleep=pauses.append)
    replay.rest_faults.fail_next(3, status)
    start, until = clean[1000].trade_id, clean[1400].trade_id
    trades, dead = parse(filler.trades_from("BTCUSDT", start, until, since_ms=clean[999].ts))
    assert dead == [] and filler.failed == 0 and replay.rest_faults.left == 0
    assert filler.retries == 3 and pauses == [0.01, 0.02, 0.02]
    assert [t for t in trades if t.trade_id < until] == clean[1000:1400]


def test_when_the_retries_are_used_up_the_gap_is_a_dead_letter_naming_attempts_and_ids(replay, clean) -> None:
    filler = TradeFiller(replay.http_url, None, retry=FAST, sleep=lambda s: None)
    replay.rest_faults.fail_next(10, 503)
    start, until = clean[1000].trade_id, clean[1400].trade_id
    trades, dead = parse(filler.trades_from("BTCUSDT", start, until, since_ms=clean[999].ts))
    replay.rest_faults.fail_next(0)
    (d,) = dead
    assert trades == [] and filler.failed == 1 and filler.retries == 3
    assert d.reason.startswith("refused REST reply: aggTrades: request failed after 4 attempts: ExchangeError: ")
    assert "-1008" in d.reason
    assert d.reason.endswith(f"unfilled: trade ids {start}..{until - 1}"), d.reason
    assert len(replay.faults) >= 4 and {f.kind for f in replay.faults} >= {"rest_error"}


@pytest.mark.parametrize("restart", [False, True])
def test_a_hole_whose_fill_failed_is_filled_on_a_later_batch_or_after_a_restart(replay, clean, restart) -> None:
    filler = TradeFiller(replay.http_url, None, retry=FillRetry(attempts=2, backoff_s=0.0, backoff_max_s=0.0))
    step = IdGapRepair("BTC/USDT")
    step.repair(clean[:1000], filler, parse)
    lost = clean[1000:1010]  # ten trades the stream never delivered
    replay.rest_faults.fail_next(1000, 503)  # REST down
    out, dead = step.repair(clean[1010:1012], filler, parse)
    replay.rest_faults.fail_next(0)  # REST back
    assert out == clean[1010:1012]
    reasons = [d.reason for d in dead]
    assert reasons[0].startswith("refused REST reply: aggTrades: request failed after 2 attempts"), reasons
    assert reasons[1] == (f"unfilled trade ids: 10 of {lost[0].trade_id}..{lost[-1].trade_id} the REST fill failed "
                          "(see the dead letter before); asked for again later"), reasons
    if restart:  # Bytewax rebuilds the step from its snapshot: the hole is asked for at the first batch
        step = IdGapRepair.from_snapshot(step.snapshot())
        nxt = [clean[1012]]
    else:  # asked for again once trade time has moved on RETRY_AFTER_MS
        early = [clean[1012]]
        assert early[0].ts < clean[1010].ts + RETRY_AFTER_MS
        out, dead = step.repair(early, filler, parse)
        assert (out, dead) == (early, []) and step.pending, "not due yet"
        k = next(k for k, t in enumerate(clean) if t.ts >= clean[1010].ts + RETRY_AFTER_MS)
        step.repair(clean[1013:k], filler, parse)
        assert step.pending, "not due yet"
        nxt = [clean[k]]
    out, dead = step.repair(nxt, filler, parse)
    assert dead == [] and step.pending == []
    assert out == lost + nxt  # the refilled trades first, equal to the clean ones (quantity split included)


def test_a_hole_rest_never_answers_for_is_given_up_after_its_tries(replay, clean) -> None:
    filler = TradeFiller(replay.http_url, None, retry=FillRetry(attempts=1))
    step = IdGapRepair("BTC/USDT")
    step.repair(clean[:1000], filler, parse)
    replay.rest_faults.fail_next(10_000, 429)
    try:
        step.repair(clean[1001:1002], filler, parse)
        given_up = []
        for k in range(1, 20):  # later trades, an hour of trade time apart: every ask is due
            t = clean[1001]._replace(trade_id=clean[1001].trade_id + k, ts=clean[1001].ts + k * 3_600_000)
            _, dead = step.repair([t], filler, parse)
            given_up += [d for d in dead if "given up" in d.reason]
            if not step.pending:
                break
    finally:
        replay.rest_faults.fail_next(0)
    (d,) = given_up
    assert d.reason.startswith(f"unfilled trade ids: 1 of {clean[1000].trade_id}..{clean[1000].trade_id} given up "
                               "after 9 tries: the REST fill failed"), d.reason


@pytest.mark.parametrize(("env", "says"), [
    ({"CRYPTOSTREAM_EXCHANGE__FILL_RETRY__ATTEMPTS": "0"}, "exchange.fill_retry.attempts"),
    ({"CRYPTOSTREAM_EXCHANGE__FILL_RETRY__BACKOFF_S": "nan"}, "exchange.fill_retry.backoff_s"),
    ({"CRYPTOSTREAM_EXCHANGE__FILL_RETRY__BACKOFF_S": "2", "CRYPTOSTREAM_EXCHANGE__FILL_RETRY__BACKOFF_MAX_S": "1"},
     "backoff_max_s (1.0) must be at least backoff_s (2.0)"),
])
def test_bad_retry_settings_are_refused_naming_the_field(env, says) -> None:
    with pytest.raises(SettingsError, match=says.replace("(", r"\(").replace(")", r"\)")):
        load_settings(env=env)


def test_the_retry_settings_reach_the_fill() -> None:
    s = load_settings(env={"CRYPTOSTREAM_EXCHANGE__FILL_RETRY__ATTEMPTS": "7"})
    assert s.exchange.fill_retry == FillRetry(attempts=7)
    assert list(FillRetry(attempts=6, backoff_s=0.5, backoff_max_s=3).pauses()) == [0.5, 1.0, 2.0, 3, 3]
