"""Decision step: close-order processing, buffering, kill switch per close, snapshot round trip.

The risk, execution and portfolio packages of issue 6 were not in the tree when this
step was written, so these tests drive it with minimal stand-ins that follow the
contract's interfaces (``/tmp/prompts/contract6.md``); the end-to-end tests use the
real packages once they are installed.
"""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

from flows.operators.decisions import Decided, DecisionDeps, DecisionStep, PortfolioRow, Status
from flows.operators.scoring import Prediction
from flows.records import Bar

TF = 60_000
SYMBOLS = ("BTC/USDT", "ETH/USDT")


class Fill(NamedTuple):
    client_order_id: str
    symbol: str
    side: str
    qty: float
    price: float
    fee: float
    ts: int


class Ledger:
    """Cash and positions from fills (contract: apply_fill, mark, snapshot, to_state/from_state)."""

    def __init__(self, cash: float = 1000.0) -> None:
        self.cash, self.pos, self.prices = cash, {}, {}

    def apply_fill(self, symbol, side, qty, price, fee, ts) -> None:
        sign = 1 if side == "buy" else -1
        self.cash -= sign * qty * price + fee
        self.pos[symbol] = self.pos.get(symbol, 0.0) + sign * qty

    def mark(self, prices, ts) -> None:
        self.prices = dict(prices)

    def snapshot(self) -> dict[str, Any]:
        eq = self.cash + sum(q * self.prices.get(s, 0.0) for s, q in self.pos.items())
        return {"cash": self.cash, "equity": eq, "positions": dict(self.pos), "drawdown": 0.0}

    def to_state(self) -> dict[str, Any]:
        return {"cash": self.cash, "pos": dict(self.pos), "prices": dict(self.prices)}

    @classmethod
    def from_state(cls, st) -> Ledger:
        out = cls(st["cash"])
        out.pos, out.prices = dict(st["pos"]), dict(st["prices"])
        return out


class Decision(NamedTuple):
    approved_qty_delta: float
    target_qty: float
    rejections: list


class Risk:
    """Target qty = fraction * 1 unit; blocks everything while the kill switch is on."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def on_bar(self, symbol, bar_ts, close, ret, vol) -> None:
        self.seen.append((symbol, bar_ts))

    def decide(self, symbol, bar_ts, fraction, confidence, price, vol, portfolio, kill, groups) -> Decision:
        held = portfolio["positions"].get(symbol, 0.0)
        if kill:
            return Decision(0.0, held, [("kill", symbol, bar_ts)])
        return Decision(fraction - held, fraction, [])

    def to_state(self) -> dict[str, Any]:
        return {"seen": list(self.seen)}

    @classmethod
    def from_state(cls, st) -> Risk:
        out = cls()
        out.seen = [tuple(x) for x in st["seen"]]
        return out


class Paper:
    """Fills resting market orders at the next bar's open, no fees."""

    def __init__(self) -> None:
        self.resting: list[tuple[str, str, str, float]] = []
        self.ids: set[str] = set()

    def submit(self, intent) -> tuple[str, ...]:
        cid = f"{intent[0]}-{intent[1]}"
        if cid not in self.ids:
            self.ids.add(cid)
            self.resting.append((cid, intent[0], "buy" if intent[1] > 0 else "sell", abs(intent[1])))
        return ("order", cid)

    def on_bar(self, bar: Bar) -> list[Fill]:
        mine = [r for r in self.resting if r[1] == bar.symbol]
        self.resting = [r for r in self.resting if r[1] != bar.symbol]
        return [Fill(c, s, side, q, bar.open, 0.0, bar.ts) for c, s, side, q in mine]

    def snapshot(self) -> dict[str, Any]:
        return {"resting": list(self.resting), "ids": sorted(self.ids)}

    def restore(self, st) -> None:
        self.resting, self.ids = [tuple(r) for r in st["resting"]], set(st["ids"])


class Target(NamedTuple):
    fraction: float
    reasons: list


def deps(kill: list[bool] | None = None) -> DecisionDeps:
    flags = kill if kill is not None else [False]
    return DecisionDeps(Ledger(), Risk(), Paper(), lambda p: Target(1.0 if p.signal == 1 else -1.0, ["ml"]),
                        lambda p, dq, price: (p.symbol, dq, p.ts), lambda: flags[0])


def bar(sym: str, k: int, px: float) -> Bar:
    return Bar(sym, "1m", k * TF, px, px + 1, px - 1, px + 0.5, 1.0, px, 1, px, 0.5)


def pred(sym: str, k: int, signal: int) -> Prediction:
    return Prediction(sym, "1m", (k + 1) * TF, {}, 0.6, 0.2, signal, float("nan"), {}, 0.0, 0.01)


def test_a_close_waits_for_every_bar_and_its_predictions_then_runs_in_order() -> None:
    step = DecisionStep(SYMBOLS, TF, deps())
    assert step.on_predictions([pred("BTC/USDT", 0, 1), pred("ETH/USDT", 0, 0)]) == []  # no bars yet
    assert step.on_bar(bar("BTC/USDT", 0, 100.0)) == []
    out = step.on_bar(bar("ETH/USDT", 0, 50.0))
    decided = [o for o in out if isinstance(o, Decided)]
    assert [(d.prediction.symbol, d.qty_delta) for d in decided] == [("BTC/USDT", 1.0), ("ETH/USDT", -1.0)]
    assert [o for o in out if isinstance(o, tuple) and o[:1] == ("order",)] == [
        ("order", "BTC/USDT-1.0"), ("order", "ETH/USDT--1.0")]
    assert isinstance(out[-2], PortfolioRow) and isinstance(out[-1], Status) and out[-1].ts == TF
    # Next close: the orders fill at the next bars' opens, then the portfolio holds them.
    step.on_bar(bar("BTC/USDT", 1, 101.0))
    out = step.on_bar(bar("ETH/USDT", 1, 49.0))  # no predictions: waits for a later close
    assert out == []
    out = [o for k in (2, 3) for s in SYMBOLS for o in step.on_bar(bar(s, k, 102.0))]
    fills = [o for o in out if isinstance(o, Fill)]
    assert [(f.symbol, f.side, f.price) for f in fills] == [("BTC/USDT", "buy", 101.0), ("ETH/USDT", "sell", 49.0)]
    rows = [o for o in out if isinstance(o, PortfolioRow)]
    assert rows[0].ts == 2 * TF and rows[0].state["positions"] == {"BTC/USDT": 1.0, "ETH/USDT": -1.0}
    assert rows[0].state["cash"] == 1000.0 - 101.0 + 49.0


def test_kill_switch_is_read_once_per_close_and_blocks_that_close() -> None:
    flags = [True]
    step = DecisionStep(SYMBOLS, TF, deps(flags))
    step.on_predictions([pred(s, 0, 1) for s in SYMBOLS])
    out = [o for s in SYMBOLS for o in step.on_bar(bar(s, 0, 10.0))]
    assert [o for o in out if isinstance(o, tuple) and o[:1] == ("kill",)] == [
        ("kill", "BTC/USDT", TF), ("kill", "ETH/USDT", TF)]
    assert not any(isinstance(o, tuple) and o[:1] == ("order",) for o in out)


def test_snapshot_round_trip_continues_like_an_uninterrupted_run() -> None:
    events: list[Any] = []
    for k in range(6):
        events += [pred(s, k, (k + i) % 2) for i, s in enumerate(SYMBOLS)]
        events += [bar(s, k, 100.0 + k + i) for i, s in enumerate(SYMBOLS)]

    def feed(step: DecisionStep, evs: list[Any]) -> list[Any]:
        out: list[Any] = []
        for e in evs:
            out += step.on_bar(e) if isinstance(e, Bar) else step.on_predictions([e])
        return out

    want = feed(DecisionStep(SYMBOLS, TF, deps()), events)
    first = DecisionStep(SYMBOLS, TF, deps())
    got = feed(first, events[:9])
    restored = pickle.loads(pickle.dumps(first))
    assert restored.deps is None
    restored.attach(deps())
    got += feed(restored, events[9:])
    assert [o for o in got if not isinstance(o, Decided)] == [o for o in want if not isinstance(o, Decided)]
    assert [o[1:] for o in got if isinstance(o, Decided)] == [o[1:] for o in want if isinstance(o, Decided)]
