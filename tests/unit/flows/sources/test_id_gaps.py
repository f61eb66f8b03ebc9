"""Holes in a symbol's trade ids (flows/sources/id_gaps.py); the fill itself: tests/unit/infra/test_replay_aggtrades.py."""

from __future__ import annotations

from flows.records import Trade
from flows.sources.id_gaps import IdGapRepair, _windows


def tr(i: int, ts: int) -> Trade:
    return Trade("BTC/USDT", i, ts, 100.0, 0.5, False)


def test_holes_inside_a_batch_and_since_the_last_batch() -> None:
    step = IdGapRepair("BTC/USDT")
    assert step.holes([tr(10, 1), tr(11, 1), tr(12, 2)]) == []
    step._remember([tr(10, 1), tr(11, 1), tr(12, 2)])
    assert step.holes([tr(13, 2), tr(14, 3)]) == []
    # 13 lost (a corrupted message), 16..17 lost, and a batch out of order
    assert step.holes([tr(14, 3), tr(18, 5), tr(15, 4)]) == [(13, 13, 2, 3), (16, 17, 4, 5)]
    assert step.holes([tr(9, 0), tr(12, 2)]) == []  # ids at or below the last one seen are not holes


def test_the_state_survives_a_snapshot() -> None:
    step = IdGapRepair("BTC/USDT")
    step._remember([tr(10, 1), tr(11, 7), tr(12, 7)])
    again = IdGapRepair.from_snapshot(step.snapshot())
    assert (again.last_id, again.last_ts, again.tail) == (12, 7, {11: 50_000_000, 12: 50_000_000})
    assert again.holes([tr(14, 8)]) == [(13, 13, 7, 8)]


def test_long_gaps_are_asked_for_an_hour_at_a_time() -> None:
    hour = 3_600_000
    assert _windows([(5, 9, 0, 10), (12, 12, 20, 30)]) == [(5, 0, 30)]
    assert _windows([(5, 9, 0, 2 * hour + 5)]) == [(5, 0, hour), (5, hour + 1, 2 * hour + 1), (5, 2 * hour + 2, 2 * hour + 5)]


def test_a_trade_id_far_ahead_is_one_dead_letter_not_a_list_of_every_missing_id() -> None:
    # A hostile (schema-valid) id 2**62 after id 10 made the old code build a list of 2**62 ids.
    class Nothing:
        failed = 0

        def trades_between(self, market_id, first_id, start_ms, end_ms, known):
            return []

    t0 = 1_723_161_600_000
    repair = IdGapRepair("BTC/USDT")
    repair.repair([Trade("BTC/USDT", 10, t0, 1.0, 1.0, True)], Nothing(), lambda msgs: ([], []))
    far = Trade("BTC/USDT", 2**62, t0 + 1, 1.0, 1.0, True)
    _, (dead,) = repair.repair([Trade("BTC/USDT", 11, t0, 1.0, 1.0, True), far], Nothing(), lambda msgs: ([], []))
    assert dead.reason == f"unfilled trade ids: {2**62 - 12} of 12..{2**62 - 1} not on REST either"
    assert dead.payload == f'{{"first":12,"last":{2**62 - 1}}}'
