"""Decision step against a golden run: the same closes give the same fills, orders, rejections and equity.

Speed work on the decision path (strategy, risk engine, paper broker, portfolio) must not
change a single result.  :func:`closes` is a fixed synthetic market (a seeded random walk
of five symbols and predictions that trade often, flip and get cut by the caps); the
golden file was written by the code before that work (``python
tests/unit/flows/test_decisions_golden.py --write``) and holds every fill, every decision
record's quantities (as a digest) and every close's equity as exact ``repr`` strings: equal means bit
for bit.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

from flows.operators.decisions import DecisionStep
from flows.records import Bar, Close, Decided, Fill, PortfolioRow, Prediction
from flows.risk.engine import Rejection
from flows.settings import load_settings
from flows.wiring import build_deps

GOLDEN = Path(__file__).parent / "golden" / "decisions_5sym_600.json"
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT")
TF = 300_000
T0 = 1_717_200_000_000


def closes(n: int = 600, seed: int = 17) -> list[Close]:
    """Return ``n`` closes of five symbols: bars of a random walk and predictions with an RL target."""
    rng = random.Random(seed)
    px = {s: 100.0 * (i + 1) for i, s in enumerate(SYMBOLS)}
    out = []
    for k in range(n):
        ts = T0 + k * TF
        bars, preds = [], []
        for s in SYMBOLS:
            o = px[s]
            c = o * math.exp(rng.gauss(0.0, 0.004 if k % 97 else 0.03))  # now and then a jump (breakers)
            hi, lo = max(o, c) * (1 + rng.random() * 0.002), min(o, c) * (1 - rng.random() * 0.002)
            vol = 0.0 if k % 151 == 7 else 50.0 + rng.random() * 500.0
            bars.append(Bar(s, "5m", ts, o, hi, lo, c, vol, vol * c, 100, c, vol * 0.5))
            px[s] = c
            p = min(0.99, max(0.01, 0.5 + rng.gauss(0.0, 0.08)))
            sig = -1 if abs(p - 0.5) < 0.02 else int(p > 0.5)
            rl = math.nan if k % 53 == 0 else max(-1.0, min(1.0, rng.gauss(0.0, 0.6)))
            preds.append(Prediction(s, "5m", ts + TF, {"lightgbm": p}, p, abs(p - 0.5) * 2, sig, rl,
                                    {"ensemble": "v1"}, math.log(c / o), 0.004 * math.sqrt(15), 1))
        out.append(Close(ts + TF, tuple(bars), tuple(preds) if k >= 3 else ()))
    return out


def run(tmp: Path, chunk: int = 1) -> dict[str, Any]:
    """Work :func:`closes` through the default settings' decision step; return what it made, as repr strings."""
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
                                  "CRYPTOSTREAM_BARS__TIMEFRAMES": "5m"})
    deps = build_deps(settings)
    deps.kill_active = lambda: False
    step = DecisionStep(SYMBOLS, TF, deps)
    cs = closes()
    out: list[Any] = []
    for i in range(0, len(cs), chunk):
        out += step.on_closes(cs[i:i + chunk])
    r = repr
    return {
        "fills": [[f.ts, f.symbol, f.side, r(f.qty), r(f.price), r(f.fee), f.client_order_id] for f in out
                  if isinstance(f, Fill)],
        # every decision's fraction, quantities and reasons, as one digest (3,000 of them)
        "decided": hashlib.sha256(repr([(d.prediction.ts, d.prediction.symbol, r(d.target_fraction),
                                         r(d.target_qty), r(d.qty_delta), d.reasons) for d in out
                                        if isinstance(d, Decided)]).encode()).hexdigest(),
        "rejections": [[j.symbol, j.bar_ts, j.rule, j.reason, r(j.requested), r(j.allowed)] for j in out
                       if isinstance(j, Rejection)],
        "equity": [[p.ts, r(p.state["equity"]), r(p.state["drawdown"])] for p in out if isinstance(p, PortfolioRow)],
    }


def test_the_decision_step_trades_the_golden_run_bit_for_bit(tmp_path) -> None:
    want = json.loads(GOLDEN.read_text())
    got = run(tmp_path)
    assert len(got["fills"]) >= 50 and len(got["rejections"]) >= 20  # the run exercises fills and the caps
    for key in ("fills", "decided", "rejections", "equity"):
        assert got[key] == want[key], key


def test_closes_worked_in_chunks_give_the_golden_run_too(tmp_path) -> None:
    assert run(tmp_path, chunk=64) == json.loads(GOLDEN.read_text())


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        GOLDEN.write_text(json.dumps(run(Path(d)), separators=(",", ":")) + "\n")
    print(f"wrote {GOLDEN}")


def test_risk_bars_held_over_quiet_stretches_give_the_same_records(tmp_path: Path, monkeypatch: Any) -> None:
    """The risk engine holds the bars of closes that read nothing (flat, no signal) and applies them as runs.

    Trading only in a few windows of 1,500 closes, every record (decisions, orders, fills, risk events,
    portfolio rows, status lines) equals a run whose engine applies each close's bars at once.
    """
    import flows.risk.engine as engine

    quiet = []
    for k, c in enumerate(closes(1500, seed=5)):
        live = k % 400 in range(150, 190)  # trading windows; the rest: no ml signal, nothing held
        quiet.append(c._replace(predictions=tuple(p if live else p._replace(signal=-1) for p in c.predictions)))

    def records(tmp: Path) -> list[str]:
        settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
                                      "CRYPTOSTREAM_BARS__TIMEFRAMES": "5m"})
        deps = build_deps(settings)
        deps.kill_active = lambda: False
        step = DecisionStep(SYMBOLS, TF, deps)
        out = [repr(x) for i in range(0, len(quiet), 256) for x in step.on_closes(quiet[i:i + 256])]
        return out + [repr(step.snapshot()["risk"])]

    held = records(tmp_path / "held")
    monkeypatch.setattr(engine, "QUEUE_BARS", 1)  # every close's bars applied when fed
    each = records(tmp_path / "each")
    assert held == each
    assert sum(r.startswith("Fill(") for r in held) >= 4
