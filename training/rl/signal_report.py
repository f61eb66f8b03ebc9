"""Does the ensemble's probability help the tactical policy?  Train with and without it, same bars, same seeds.

    python -m training.rl.signal_report --registry R --data-dir ../shared/data \\
        --symbols BTC/USDT ETH/USDT SOL/USDT BNB/USDT XRP/USDT --start 2020-09-20 --end 2024-01-01 \\
        --seeds 7 8 --out training/reports/rl/SIGNAL.md [--only with|without --seed-json DIR]

The candles go through the flow's operators once; the ensemble's out-of-sample,
point-in-time probability (:mod:`training.rl.signal`) is attached, which keeps only the
bars that have one; the run *without* the signal uses exactly those bars too, so the two
differ only in the observation's extra column.  Each seed trains the tactical agent as
``python -m training.rl train tactical`` does (same environment configs, agent settings,
70 / 15 / 15 split by time, validation early stopping), then the agent's deterministic
policy trades the test slice once per asset, after fees (the one cost model's taker fee
and slippage, as in training) and, replaying the same targets, before fees; buy-and-hold
(target +1) is traded the same way.  ``--only`` runs one arm into ``--seed-json`` (to run the
arms in two processes), a last call without ``--only`` reads them back and writes the report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ARMS = ("without", "with")


def _episode(md: Any, asset: int, targets: np.ndarray | None, policy: Any, fees: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Trade one asset's whole slice; return the equity curve and totals (targets taken, fees, traded)."""
    from training.rl.envs.tactical import TacticalEnv
    from training.rl.runs import env_configs

    cfg = env_configs("tactical")[1]
    cfg = cfg if fees else replace(cfg, fee_rate=0.0, slippage=0.0)
    env = TacticalEnv(md, asset, cfg)
    obs, info = env.reset()
    eq, acts, fee, traded, done, t = [info["equity"]], [], 0.0, 0.0, False, 0
    while not done:
        a = np.array([targets[t]], np.float32) if targets is not None else policy(obs)
        acts.append(float(a[0]))
        obs, _, term, trunc, info = env.step(a)
        eq.append(info["equity"])
        fee, traded, done, t = fee + info["fee"], traded + info["traded"], term or trunc, t + 1
    return np.asarray(eq), {"targets": np.asarray(acts, np.float32), "fee": fee, "traded": traded}


def _metrics(curves: list[np.ndarray], totals: list[dict[str, Any]], periods: float) -> dict[str, float]:
    """Equal capital per asset: metrics of the mean normalised curve (training.rl.evaluate's convention)."""
    from training.rl.evaluate import equity_metrics

    n = max(len(c) for c in curves)
    mean = np.mean(np.stack([np.pad(c / c[0], (0, n - len(c)), mode="edge") for c in curves]), axis=0)
    m = equity_metrics(mean, periods)
    m["fees_pct"] = float(np.mean([100 * t["fee"] / c[0] for c, t in zip(curves, totals, strict=True)]))
    m["turnover"] = float(np.mean([t["traded"] / np.mean(c) for c, t in zip(curves, totals, strict=True)]))
    return m


def run_arm(md: Any, arm: str, seed: int, timesteps: int | None) -> dict[str, Any]:
    """Train one arm with one seed; return its test-slice metrics (before / after fees) and training record."""
    from training.metrics import periods_per_year
    from training.rl.agents import train_agent
    from training.rl.data import split_by_time
    from training.rl.runs import SPLITS, agent_config, make_env

    data = md if arm == "with" else replace(md, signal=None, signal_source=None)
    t0 = time.perf_counter()
    train_md, valid_md, test_md = split_by_time(data, *SPLITS)
    train_env, _ = make_env("tactical", train_md, seed, evaluation=False)
    valid_env, n_valid = make_env("tactical", valid_md, seed, evaluation=True)
    cfg = replace(agent_config("tactical", seed, False, timesteps), n_eval_episodes=n_valid)
    res = train_agent(cfg, train_env, valid_env)
    seconds = time.perf_counter() - t0
    periods = periods_per_year(md.timeframe)

    def policy(o: np.ndarray) -> np.ndarray:
        return np.asarray(res.model.predict(o, deterministic=True)[0], np.float32)

    out: dict[str, Any] = {"arm": arm, "seed": seed, "train_seconds": round(seconds, 1),
                           "timesteps": res.timesteps, "stopped_early": res.stopped_early,
                           "best_validation_reward": res.best_mean_reward,
                           "test": [str(np.datetime64(int(test_md.decision_times[i]), "ns"))[:16] for i in (0, -1)]}
    for name, strat in (("policy", policy), ("buy_and_hold", lambda o: np.ones(1, np.float32))):
        after, before = [], []
        for a in range(len(test_md.symbols)):
            eq, tot = _episode(test_md, a, None, strat, fees=True)
            eq0, tot0 = _episode(test_md, a, tot["targets"], None, fees=False)
            after.append((eq, tot))
            before.append((eq0, tot0))
        out[name] = {"after_fees": _metrics([e for e, _ in after], [t for _, t in after], periods),
                     "before_fees": _metrics([e for e, _ in before], [t for _, t in before], periods)}
    return out


def load_data(a: argparse.Namespace) -> Any:
    """Candles through the operators, then the ensemble's point-in-time probability (only bars that have it)."""
    from training.rl.data import load_market_data
    from training.rl.runs import candle_source, rl_features
    from training.rl.signal import ensemble_oos_probability, with_signal

    symbols = tuple(a.symbols)
    md = load_market_data(candle_source(a.data_dir, symbols, "1h"), symbols, "1h", a.start, a.end,
                          features=rl_features(symbols))
    probs, record = ensemble_oos_probability(a.registry, a.ensemble_version)
    return with_signal(md, probs, record)


def report(runs: list[dict[str, Any]], md: Any, cmd: str) -> str:
    """Return SIGNAL.md's table part: per seed and arm, the test slice before and after fees, and buy-and-hold."""
    cols = ("total_return", "sharpe", "max_drawdown", "turnover", "fees_pct")
    head = "| arm | seed | | " + " | ".join(cols) + " | train s | steps |\n|" + "---|" * (len(cols) + 5) + "\n"
    rows = []
    for r in sorted(runs, key=lambda r: (r["arm"], r["seed"])):
        for kind in ("before_fees", "after_fees"):
            m = r["policy"][kind]
            rows.append(f"| {r['arm']} | {r['seed']} | {kind.replace('_', ' ')} | "
                        + " | ".join(f"{m[c]:.4g}" for c in cols) + f" | {r['train_seconds']} | {r['timesteps']} |")
    bh = runs[0]["buy_and_hold"]
    for kind in ("before_fees", "after_fees"):
        m = bh[kind]
        rows.append(f"| buy-and-hold | | {kind.replace('_', ' ')} | " + " | ".join(f"{m[c]:.4g}" for c in cols)
                    + " | | |")
    src = md.signal_source or {}
    return (f"Test slice {runs[0]['test'][0]} to {runs[0]['test'][1]} UTC, {', '.join(md.symbols)} 1h, equal "
            f"capital per asset; ensemble `{src.get('ensemble')}` (members {src.get('members')}).\n\n"
            f"Command: `{cmd}`\n\n" + head + "\n".join(rows) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m training.rl.signal_report", description=__doc__.split("\n\n")[0])
    p.add_argument("--registry", type=Path, required=True)
    p.add_argument("--ensemble-version", default="latest")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--symbols", nargs="+", required=True)
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[7, 8])
    p.add_argument("--timesteps", type=int)
    p.add_argument("--only", choices=ARMS)
    p.add_argument("--seed-json", type=Path, help="directory of each arm's results (with --only, or to read)")
    p.add_argument("--out", type=Path, default=Path("training/reports/rl/SIGNAL.md"))
    a = p.parse_args(argv)
    md = load_data(a)
    runs: list[dict[str, Any]] = []
    for arm in (a.only,) if a.only else ARMS:
        for seed in a.seeds:
            f = None if a.seed_json is None else a.seed_json / f"{arm}-{seed}.json"
            if f is not None and f.is_file() and not a.only:
                runs.append(json.loads(f.read_text()))
                continue
            r = run_arm(md, arm, seed, a.timesteps)
            print(json.dumps(r, default=float))
            if f is not None:
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text(json.dumps(r, default=float, indent=1))
            runs.append(r)
    if not a.only:
        cmd = "python -m training.rl.signal_report " + " ".join(sys.argv[1:] if argv is None else argv)
        body = report(runs, md, cmd)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        (a.out.with_suffix(".table.md")).write_text(body)
        print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
