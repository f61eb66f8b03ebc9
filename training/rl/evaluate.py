"""Out-of-sample evaluation of the registered policies against simple baselines, with a report.

    python -m training.rl evaluate tactical --data-dir ../shared/data

The registered policy (``rl_<level>``, run through :class:`inference.policy.PolicyRunner`,
i.e. the exported ONNX graph the flow would run) acts on the *test* slice of its
run (after ``split.test_start`` in the manifest: never seen in training or
validation), in the same environment and with the same costs as the baselines:

* tactical (per asset, equal capital): buy-and-hold (target +1 every bar: fully long, the
  exposure kept at 1 by small rebalances), flat (0), and the
  LightGBM signal (``training.models.lightgbm_model``, trained on the training slice
  only, walk-forward rounds; +1 / -1 by the scorer's confidence threshold, flat
  below it) and its sign (+1 if p > 0.5 else -1);
* strategic: buy-and-hold equal weights (bought once at the first open), daily
  rebalanced equal weights (1/N), cash, and the LightGBM strategy (equal weights on
  the assets with p > 0.5 at each rebalance, cash when none);
* execution: TWAP (a market slice of ``remaining / bars_left`` each bar), the same
  slice as a limit at the bar's open (passive TWAP, the rest forced at the deadline)
  and an immediate market order, on the same fixed parent orders (sides alternating).

Results go to ``<report-dir>/<level>.md`` with PNG plots, and ``REPORT.md``
gathers ``NOTES.md`` (a hand-written reading of the numbers, if present) and the
levels present.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flows.settings import Settings
from inference.policy import PolicyRunner
from inference.scorer import to_signal
from training.metrics import periods_per_year
from training.performance import drawdown_of, sharpe_ratio
from training.plots import plot_curves, plot_shortfalls
from training.render import markdown_table, short
from training.rl.agents import FAMILIES
from training.rl.data import MarketData
from training.rl.envs.execution import MARKET_ALL, ExecutionEnv
from training.rl.job import RlJob
from training.rl.runs import execution_schedule, make_env

Strategy = Callable[[int, np.ndarray], Any]  # (bar t, observation) -> action


def equity_metrics(equity: np.ndarray, periods: float, fees: float = 0.0, traded: float = 0.0) -> dict[str, float]:
    """Return total / annual return, Sharpe (per-period simple returns), max drawdown, fees and turnover."""
    e = np.asarray(equity, np.float64)
    r = e[1:] / e[:-1] - 1.0
    years = len(r) / periods
    return {"total_return": float(e[-1] / e[0] - 1.0),
            "annual_return": float((e[-1] / e[0]) ** (1.0 / years) - 1.0) if years > 0 else math.nan,
            # no Sharpe for an (almost) riskless curve: cash's rounding-level moves are not a ratio worth printing
            "sharpe": sharpe_ratio(r, periods, min_vol=1e-3),
            "max_drawdown": -float(drawdown_of(pd.Series(e)).min()),
            "fees_pct": 100.0 * fees / float(e[0]), "turnover": traded / float(np.mean(e))}


def run_episode(env: Any, strategy: Strategy, options: dict[str, Any] | None = None) -> tuple[list[float], dict[str, Any]]:
    """Run one episode; return the equity after each step (reset included) and the summed fees and traded."""
    obs, info = env.reset(options=options)
    equity = [float(info.get("equity", 0.0))]
    totals = {"fee": 0.0, "traded": 0.0, "steps": 0}
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(strategy(int(getattr(env, "current", env).t), obs))
        done = terminated or truncated
        equity.append(float(info.get("equity", 0.0)))
        totals["fee"] += float(info.get("fee", 0.0))
        totals["traded"] += float(info.get("traded", 0.0))
        totals["steps"] += 1
    return equity, {**totals, "last": info}


def policy_strategy(runner: PolicyRunner) -> Strategy:
    """Return the registered policy as a strategy."""
    return lambda t, obs: runner.act(obs[None])[0]


def lightgbm_probabilities(md: MarketData, train_end_ns: int, seed: int = 7) -> np.ndarray:
    """Train LightGBM on decisions before ``train_end_ns`` only; return P(up next bar) for every bar ``[T, A]``.

    Label of bar t: the next bar closes above its open (the return a decision at t earns
    when it trades at the next open); rounds from purged walk-forward on the training rows.
    """
    import pandas as pd

    from training.models.lightgbm_model import LightGBMConfig, LightGBMModel
    from training.validation import WalkForward, WalkForwardConfig

    names = list(md.feature_names)
    fwd = np.full(md.close.shape, np.nan)
    fwd[:-1] = np.log(md.close[1:] / md.open[1:])
    t_idx, a_idx = np.meshgrid(np.arange(md.n_bars), np.arange(len(md.symbols)), indexing="ij")
    frame = pd.DataFrame(md.features.reshape(-1, len(names)).astype(np.float64), columns=names)
    frame["symbol"] = np.asarray(md.symbols)[a_idx.ravel()]
    frame["event_timestamp"] = pd.to_datetime(md.decision_times[t_idx.ravel()], utc=True)
    frame["fwd_ret"] = fwd.ravel()
    frame["label"] = (frame["fwd_ret"] > 0).astype(np.int8)
    train = frame[(md.decision_times[t_idx.ravel()] < train_end_ns) & np.isfinite(frame["fwd_ret"])]
    train = train.sort_values(["event_timestamp", "symbol"]).reset_index(drop=True)
    cfg = LightGBMConfig(seed=seed, timeframe=md.timeframe, max_rounds=500)
    model = LightGBMModel(cfg)
    cv = model.cross_validate(train, WalkForward(train["event_timestamp"], md.timeframe,
                                                 WalkForwardConfig(n_splits=3)), names)
    model.fit_final(train, cv.best_iterations, names)
    return model.predict_proba(frame[names]).reshape(md.n_bars, len(md.symbols))


def first_test_row(md: MarketData, test_start: str) -> int:
    import pandas as pd

    return int(np.searchsorted(md.decision_times, pd.Timestamp(test_start).value, side="left"))


def evaluate_tactical(runner: PolicyRunner, md: MarketData, test_start: str, seed: int = 7,
                      progress: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Return metrics by strategy (per asset and equal-capital over assets) and the equity curves."""
    i0 = first_test_row(md, test_start)
    proba = lightgbm_probabilities(md, _train_end(runner), seed)
    test = md.take(slice(i0, None))
    p_test = proba[i0:]
    periods = periods_per_year(md.timeframe)
    curves: dict[str, list[np.ndarray]] = {}
    table: dict[str, Any] = {}
    for a, sym in enumerate(_bar(test.symbols, progress, "tactical assets")):
        _, sig = to_signal(p_test[:, a], 0.1)
        signal_pos = np.where(sig == 1, 1.0, np.where(sig == 0, -1.0, 0.0)).astype(np.float32)
        sign_pos = np.where(p_test[:, a] > 0.5, 1.0, -1.0).astype(np.float32)
        strategies: dict[str, Strategy] = {
            "policy": policy_strategy(runner), "buy_and_hold": lambda t, o: np.ones(1, np.float32),
            "flat": lambda t, o: np.zeros(1, np.float32), "lightgbm": _scripted(signal_pos),
            "lightgbm_sign": _scripted(sign_pos)}
        one = test.select(symbols=[sym])
        for name, strat in strategies.items():
            env, _ = make_env("tactical", one, seed, evaluation=True)
            eq, tot = run_episode(env, strat)
            e = np.asarray(eq) / eq[0]
            curves.setdefault(name, []).append(e)
            table.setdefault(name, {})[sym] = equity_metrics(np.asarray(eq), periods, tot["fee"], tot["traded"])
    n = max(len(e) for v in curves.values() for e in v)  # an episode ends early on ruin: equity stays there
    out_curves = {k: np.mean(np.stack([np.pad(e, (0, n - len(e)), mode="edge") for e in v]), axis=0)
                  for k, v in curves.items()}
    for name, e in out_curves.items():
        per_asset = list(table[name].values())
        table[name]["all (equal capital)"] = {
            **equity_metrics(e, periods), "fees_pct": float(np.mean([r["fees_pct"] for r in per_asset])),
            "turnover": float(np.mean([r["turnover"] for r in per_asset]))}
    return table, out_curves


def _bar(items: Any, progress: bool, desc: str) -> Any:
    """Wrap ``items`` in a tqdm bar when ``progress``."""
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False)


def _scripted(positions: np.ndarray) -> Strategy:
    """Return a strategy that takes ``positions[t]`` at bar ``t``."""
    return lambda t, o: positions[t: t + 1]


def _train_end(runner: PolicyRunner) -> int:
    import pandas as pd

    return int(pd.Timestamp(runner.manifest.extra["split"]["valid_start"]).value)


def evaluate_strategic(runner: PolicyRunner, md: MarketData, test_start: str, seed: int = 7
                       ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Return metrics by strategy and equity curves (per rebalancing period)."""
    i0 = first_test_row(md, test_start)
    proba = lightgbm_probabilities(md, _train_end(runner), seed)
    test = md.take(slice(i0, None))
    env, _ = make_env("strategic", test, seed, evaluation=True)
    k = env.envs[0].config.rebalance_bars  # type: ignore[attr-defined]
    n_a = len(test.symbols)
    equal = np.array([1.0] * n_a + [-1.0], np.float32)

    def lgbm(t: int, o: np.ndarray) -> np.ndarray:
        up = proba[i0 + t] > 0.5
        return np.array([*(np.where(up, 1.0, -1.0)), -1.0 if up.any() else 1.0], np.float32)

    strategies: dict[str, Strategy] = {"policy": policy_strategy(runner), "equal_weight_1/N": lambda t, o: equal,
                                       "cash": lambda t, o: np.array([-1.0] * n_a + [1.0], np.float32),
                                       "lightgbm": lgbm}
    periods = periods_per_year(md.timeframe) / k
    table, curves = {}, {}
    for name, strat in strategies.items():
        eq, tot = run_episode(env, strat)
        curves[name] = np.asarray(eq) / eq[0]
        table[name] = equity_metrics(np.asarray(eq), periods, tot["fee"], tot["traded"])
    cfg = env.envs[0].config  # type: ignore[attr-defined]
    steps = len(curves["policy"]) - 1
    curves["buy_and_hold"], table["buy_and_hold"] = buy_and_hold(test, np.arange(1, steps + 1) * k, cfg.fee_rate,
                                                                 cfg.slippage, periods)
    return table, curves


def buy_and_hold(md: MarketData, rows: np.ndarray | slice, fee_rate: float, slippage: float,
                 periods: float) -> tuple[np.ndarray, dict[str, float]]:
    """Return equal weights bought at the first open with these costs, never rebalanced: equity at the closes ``rows``.

    The curve starts at 1 (before the purchase); the metrics are :func:`equity_metrics` of it.
    """
    fill = md.open[1] * (1.0 + slippage)
    units = (1.0 / len(md.symbols)) / (fill * (1.0 + fee_rate))  # per unit of initial equity
    bh = np.r_[1.0, md.close[rows] @ units]
    notional = float(units @ fill)
    return bh, equity_metrics(bh, periods, fee_rate * notional, notional)


def evaluate_execution(runner: PolicyRunner, md: MarketData, test_start: str, per_asset: int = 200,
                       seed: int = 7, progress: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Return shortfall statistics (bps of arrival notional) by strategy on fixed parent orders."""
    i0 = first_test_row(md, test_start)
    test = md.take(slice(i0, None))
    env, _ = make_env("execution", test, seed, evaluation=True)
    probe: ExecutionEnv = env.envs[0]  # type: ignore[assignment]
    twap = probe.action_index("market", 1.0)
    passive = probe.action_index("limit", 1.0, 0.0)
    schedule = execution_schedule(test, probe.config, per_asset)
    strategies: dict[str, Strategy] = {"policy": lambda t, o: int(runner.act(o[None])[0, 0]),
                                       "twap": lambda t, o: twap, "twap_limit_at_open": lambda t, o: passive,
                                       "immediate_market": lambda t, o: MARKET_ALL}
    shortfalls: dict[str, np.ndarray] = {}
    table: dict[str, Any] = {}
    for name, strat in _bar(list(strategies.items()), progress, "execution strategies"):
        rows, leftovers, steps, kinds = [], [], [], []
        for asset, opts in schedule:
            env.current = env.envs[asset]
            obs, info = env.current.reset(options=opts)
            total, done, n = 0.0, False, 0
            while not done:
                action = strat(n, obs)
                kinds.append(probe.describe_action(int(action))["kind"])
                obs, r, done, truncated, step_info = env.current.step(action)
                total -= float(r)
                n += 1
                done = done or truncated
            rows.append(total)
            leftovers.append(step_info["leftover"] / info["quantity"])
            steps.append(n)
        s = np.asarray(rows)
        shortfalls[name] = s
        table[name] = {"mean_bps": float(s.mean()), "median_bps": float(np.median(s)), "std_bps": float(s.std()),
                       "p95_bps": float(np.percentile(s, 95)), "mean_leftover_pct": 100 * float(np.mean(leftovers)),
                       "mean_bars_used": float(np.mean(steps)), "orders": len(s),
                       "limit_bars_pct": 100.0 * kinds.count("limit") / len(kinds),
                       "wait_bars_pct": 100.0 * kinds.count("wait") / len(kinds)}
    for name in strategies:
        table[name]["beats_twap_pct"] = 100.0 * float(np.mean(shortfalls[name] < shortfalls["twap"]))
    return table, shortfalls


def write_report(report_dir: Path, level: str, body: str) -> Path:
    """Write ``<level>.md`` and rebuild ``REPORT.md`` from the levels present."""
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / f"{level}.md").write_text(body)
    parts = ["# RL agents: out-of-sample evaluation\n",
             "Generated by `python -m training.rl evaluate LEVEL` (training/rl/evaluate.py); every figure "
             "below is on the test slice of the policy's run (the last 15 % of its bars by time), which "
             "neither training nor validation (early stopping, export parity) saw. The policy is the "
             "registered ONNX graph run by `inference.policy.PolicyRunner`, in the same environment and "
             "with the same costs as the baselines.\n"]
    for lv in ("NOTES", "tactical", "strategic", "execution", "hierarchy"):  # NOTES.md: hand-written reading, if any
        f = report_dir / f"{lv}.md"
        if f.is_file():
            parts.append(f.read_text())
    (report_dir / "REPORT.md").write_text("\n".join(parts))
    return report_dir / "REPORT.md"


def _header(level: str, runner: PolicyRunner, md: MarketData, test: MarketData) -> str:
    import pandas as pd

    m = runner.manifest
    val = m.metrics.get("validation", {})
    span = (f"{pd.Timestamp(int(test.decision_times[0]), tz='UTC'):%Y-%m-%d %H:%M} to "
            f"{pd.Timestamp(int(test.decision_times[-1]), tz='UTC'):%Y-%m-%d %H:%M} UTC")
    return (f"## {level.capitalize()} ({m.extra.get('algorithm', '?')}, `{m.family}/{m.version}`)\n\n"
            f"- data: {', '.join(md.symbols)} {md.timeframe}; training decisions {m.train_start[:16]} to "
            f"{m.train_end[:16]}; test {span} ({test.n_bars} bars)\n"
            f"- features ({len(m.features)}): {', '.join(m.features)}"
            f"{'; regime inputs: ' + ', '.join(m.extra['regime']) if m.extra.get('regime') else ''}\n"
            f"- training: {m.metrics.get('timesteps')} environment steps, stopped early: "
            f"{m.metrics.get('stopped_early')}, best validation episode reward "
            f"{short(float(val.get('best_mean_reward', math.nan)))}; export parity max |diff| "
            f"{m.parity.max_abs_diff:.2e} on {m.parity.rows} held-out observations\n")


def policy_data(runner: PolicyRunner, a: RlJob, settings: Settings, symbols: tuple[str, ...] | None = None,
                 timeframe: str | None = None, start: str | None = None) -> MarketData:
    """Load the candles and features a policy observes (its run's range unless given), regime included."""
    from training.rl.data import REGIME_NAMES, load_market_data, with_regime
    from training.rl.runs import candle_source, stored_market_data

    m = runner.manifest
    symbols, tf = tuple(symbols or m.extra["symbols"]), timeframe or str(m.extra["timeframe"])
    data = m.extra.get("data", {})
    start, end = start or a.start or data.get("start"), a.end or data.get("end")
    if a.data_dir is None:
        md = stored_market_data(settings, symbols, tf, start, end, m.features)
    else:
        md = load_market_data(candle_source(a.data_dir, symbols, tf), symbols, tf, start, end,
                              features=list(m.features))
    if m.extra.get("regime"):
        from flows.operators.regime import resolve_model

        if m.extra.get("regime_daily", True) and a.regime_dir is None:
            raise ValueError(f"{m.family}/{m.version} observes the regime {m.extra['regime']} of daily inputs: "
                             "pass --regime-dir")
        if tuple(m.extra["regime"]) != REGIME_NAMES:
            raise ValueError(f"{m.family}/{m.version} observes the daily inputs {m.extra['regime']} of before the "
                             "regime classifier: retrain it (python -m training.rl train strategic --regime-dir ...)")
        md = with_regime(md, a.regime_dir, resolve_model(m.extra.get("regime_model"), a.registry))
    source = m.extra.get("ensemble_prob")
    if source:  # the policy observes the ensemble's probability: its out-of-sample value, as in training
        from training.rl.signal import ensemble_oos_probability, with_signal

        probs, record = ensemble_oos_probability(a.registry, str(source["ensemble"]))
        md = with_signal(md, probs, record)
    return md


def evaluate_cli(a: RlJob, settings: Settings) -> Path:
    """``python -m training.rl evaluate LEVEL``: evaluate the registered policy and write the report (a level, not
    ``hierarchy``: :func:`training.rl.hierarchy_report.hierarchy_cli` composes the three)."""
    import pandas as pd

    runner = PolicyRunner.from_registry(a.registry, FAMILIES[a.level], a.version)
    m = runner.manifest
    md = policy_data(runner, a, settings)
    test_start = m.extra["split"]["test_start"]
    test = md.take(slice(first_test_row(md, test_start), None))
    if test.n_bars < 50:
        raise ValueError(f"only {test.n_bars} test bars after {test_start}: load the run's data range")
    out = Path(a.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    head = _header(a.level, runner, md, test)
    if a.level == "execution":
        table, shortfalls = evaluate_execution(runner, md, test_start, seed=a.seed, progress=not a.no_progress)
        plot_shortfalls(shortfalls, out / "execution_shortfall.png")
        body = (head + "\nParent orders of 5 % of the trailing mean volume per bar over the horizon, "
                "spread evenly over the test slice, sides alternating; shortfall = price and fees against "
                "the arrival price (close of the bar before the first working bar), in bps, lower is better.\n\n"
                + markdown_table(table) + "\n\n![shortfall](execution_shortfall.png)\n")
    elif a.level == "tactical":
        table, curves = evaluate_tactical(runner, md, test_start, a.seed, progress=not a.no_progress)
        plot_curves(curves, out / "tactical_equity.png", "tactical, equal capital per asset (test)", "bar")
        body = head + "\n" + "\n\n".join(
            f"### {sym}\n\n" + markdown_table({k: v[sym] for k, v in table.items()})
            for sym in (*test.symbols, "all (equal capital)")) + "\n\n![equity](tactical_equity.png)\n"
    else:
        table, curves = evaluate_strategic(runner, md, test_start, a.seed)
        plot_curves(curves, out / "strategic_equity.png", "strategic allocation (test)", "rebalance")
        body = head + "\n" + markdown_table(table) + "\n\n![equity](strategic_equity.png)\n"
    (out / f"{a.level}.json").write_text(json.dumps(table, indent=2, sort_keys=True, default=float))
    report = write_report(out, a.level, body)
    print(f"{a.level}: {report} ({pd.Timestamp.now(tz='UTC'):%H:%M} UTC)")
    return report
