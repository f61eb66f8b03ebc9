"""Train, export and evaluate the RL agents.

    python -m training.rl train tactical --data-dir ../shared/data --symbols BTC/USDT ETH/USDT SOL/USDT
    python -m training.rl export tactical
    python -m training.rl evaluate tactical --data-dir ../shared/data

``train`` loads candles (``--data-dir``: a directory of ``BASE_QUOTE-TF.*`` candle files,
or one holding such directories; without it, the bars a backfill stored in the
profile's offline store), computes the live features, splits by time into
training / validation / test (70 / 15 / 15 %), trains the level's agent with
early stopping on the validation episodes (TensorBoard logs under
``<log-dir>/rl/<level>``) and saves it with its run record and held-out
observations to ``<work-dir>/<level>``.  ``export`` turns that agent into
``policy.onnx`` (accepted only on parity with the agent's deterministic predict on
the held-out observations) and registers it as ``rl_<level>``.  ``evaluate`` runs
the registered policy on the test slice against the baselines and writes
``training/reports/rl/`` (``evaluate hierarchy``: the three registered policies composed).  ``--quick`` trains on the last bars with a small budget (the
bootstrap's tactical policy, under a minute on 2 cores).

``train tactical --ensemble-prob`` adds the registry's ensemble probability to the
observation (``--ensemble-version``, default latest): on the training rows its
out-of-sample, point-in-time value (``training.rl.signal``), only the bars that have one;
the export records it in the manifest (``extra.ensemble_prob``) and the stream's scoring
step then feeds the live ensemble's ``prob`` of the same bar.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flows.settings import Settings, SettingsError, load_settings
from training.export import ExportRejected
from training.rl.job import RlJob

LEVELS = ("strategic", "tactical", "execution")  # as training.rl.agents.LEVELS, without importing torch here

QUICK_BARS = 3_000
RUN_FILE, HELDOUT_FILE = "run.json", "heldout.npy"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.rl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("train", "export", "evaluate"))
    p.add_argument("level", choices=(*LEVELS, "hierarchy"), help="hierarchy: evaluate only (the three composed)")
    p.add_argument("--config", help="settings YAML (else $CRYPTOSTREAM_CONFIG)")
    p.add_argument("--data-dir", type=Path, help="candle files (default: the offline store's bars)")
    p.add_argument("--symbols", nargs="+", help="default: the settings' symbols")
    p.add_argument("--timeframe", help="default: 1h (tactical, strategic), 5m (execution); "
                                       "the trading timeframe without --data-dir")
    p.add_argument("--start", help="first bar, ISO 8601 UTC")
    p.add_argument("--end", help="end (exclusive), ISO 8601 UTC")
    p.add_argument("--regime-dir", type=Path, help="strategic: the regime classifier's daily funding and Fear & "
                   "Greed files (flows/operators/regime.py); without it the regime reads prices alone")
    p.add_argument("--regime-model", help="strategic: observe the regime classifier: 'rules' (the default with "
                   "--regime-dir), 'latest' (python -m training.regime fit into --registry) or a regime.json")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--registry", type=Path, help="registry root (default <data_dir>/registry)")
    p.add_argument("--work-dir", type=Path, help="trained agents (default <data_dir>/work/rl)")
    p.add_argument("--log-dir", type=Path, help="TensorBoard logs (default <data_dir>/logs)")
    p.add_argument("--timesteps", type=int, help="environment step budget (default per level)")
    p.add_argument("--quick", action="store_true", help="last bars, small budget (bootstrap)")
    p.add_argument("--version", default="latest", help="evaluate: registered policy version")
    p.add_argument("--report-dir", type=Path, default=Path("training/reports/rl"), help="evaluate: report directory")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--ensemble-prob", action="store_true",
                   help="tactical: observe the ensemble's calibrated probability (out-of-sample, point in time)")
    p.add_argument("--ensemble-version", default="latest", help="with --ensemble-prob: the ensemble version")
    return p


def load_run_data(a: RlJob, settings: Settings) -> Any:
    """Load the run's MarketData (files or offline store), features of :func:`rl_features`."""
    from training.rl.data import load_market_data, with_regime
    from training.rl.runs import TIMEFRAMES, candle_source, rl_features, stored_market_data

    symbols = tuple(a.symbols or settings.symbols)
    if a.data_dir is None:
        tf = a.timeframe or settings.trading_timeframe()
        md = stored_market_data(settings, symbols, tf, a.start, a.end, rl_features(symbols))
    else:
        tf = a.timeframe or TIMEFRAMES[a.level]
        src = candle_source(a.data_dir, symbols, tf)
        start = a.start or (_quick_start(src, symbols[0], tf, a.end) if a.quick else None)
        md = load_market_data(src, symbols, tf, start, a.end, features=rl_features(symbols))
    if (a.regime_dir is not None or a.regime_model) and a.level == "strategic":
        from flows.operators.regime import resolve_model

        md = with_regime(md, a.regime_dir, resolve_model(a.regime_model, a.registry))
    if a.ensemble_prob:
        md = attach_signal(md, a.registry, a.ensemble_version)
    if a.quick and md.n_bars > QUICK_BARS:
        md = md.take(slice(md.n_bars - QUICK_BARS, None))
    return md


def attach_signal(md: Any, registry: Path, version: str) -> Any:
    """Return ``md`` with the ensemble's point-in-time probability attached (its provenance in ``signal_source``)."""
    from training.rl.signal import ensemble_oos_probability, with_signal

    probs, record = ensemble_oos_probability(registry, version, timeframe=getattr(md, "timeframe", None))
    return with_signal(md, probs, record)


def _quick_start(src: Path, symbol: str, timeframe: str, end: str | None) -> str:
    """Return the start that leaves ``QUICK_BARS`` bars (plus the operators' warm-up) before the data's end."""
    import pandas as pd

    from flows.sources.candle_files import read_candles
    from flows.timeframes import timeframe_ms

    path = next(iter(sorted(src.glob(f"{symbol.replace('/', '_')}-{timeframe}.*"))))
    last = pd.Timestamp(int(read_candles(path)["ts"].iloc[-1]), unit="ms", tz="UTC")
    if end is not None:
        last = min(last, pd.Timestamp(end, tz="UTC") if pd.Timestamp(end).tzinfo is None else pd.Timestamp(end))
    return (last - (QUICK_BARS + 400) * pd.Timedelta(milliseconds=timeframe_ms(timeframe))).isoformat()


def _iso(ns: int) -> str:
    import pandas as pd

    return pd.Timestamp(int(ns), tz="UTC").isoformat()


def train(a: RlJob, settings: Settings) -> Path:
    """Train a level's agent and save it (with its run record and held-out observations) to the work dir."""
    from training.rl.agents import save_agent, train_agent
    from training.rl.data import split_by_time
    from training.rl.export import arrays_hash
    from training.rl.runs import (
        SPLITS,
        agent_config,
        env_config_dict,
        make_env,
        rollout_observations,
    )

    t0 = time.perf_counter()
    md = load_run_data(a, settings)
    train_md, valid_md, test_md = split_by_time(md, *SPLITS)
    level = a.level
    if level == "hierarchy":
        raise SettingsError("'hierarchy' is for evaluate only: train and export each level")
    train_env, _ = make_env(level, train_md, a.seed, evaluation=False, quick=a.quick)
    valid_env, n_valid = make_env(level, valid_md, a.seed, evaluation=True, quick=a.quick,
                                  episodes_per_asset=10 if a.quick else 50)
    cfg = agent_config(level, a.seed, a.quick, a.timesteps)
    from dataclasses import replace

    cfg = replace(cfg, n_eval_episodes=n_valid)
    res = train_agent(cfg, train_env, valid_env, tensorboard_log=a.log_dir / "rl" / level,
                      progress=not a.no_progress, run_name=f"seed{a.seed}")
    out = save_agent(res, a.work_dir / level)
    held_env, _ = make_env(level, valid_md, a.seed + 100, evaluation=True, quick=a.quick)
    held = rollout_observations(held_env, lambda o: res.model.predict(o, deterministic=True)[0],
                                n=512 if a.quick else 2_000, seed=a.seed + 100)
    np.save(out / HELDOUT_FILE, held)
    dt = np.asarray(train_md.decision_times)
    run = {"level": level, "symbols": list(md.symbols), "timeframe": md.timeframe,
           "features": list(md.feature_names), "feature_service": md.feature_service,
           "regime": list(md.regime_names), "regime_model": a.regime_model or ("rules" if md.regime_names else None),
           "regime_daily": a.regime_dir is not None, "seed": a.seed, "quick": bool(a.quick),
           "data_dir": None if a.data_dir is None else str(a.data_dir), "start": a.start, "end": a.end,
           "train_start": _iso(dt[0]), "train_end": _iso(dt[-1]),
           "valid_start": _iso(valid_md.decision_times[0]), "test_start": _iso(test_md.decision_times[0]),
           "test_end": _iso(test_md.decision_times[-1]),
           "data_hash": arrays_hash(train_md.times, train_md.open, train_md.close, train_md.features),
           "env": env_config_dict(level, a.quick), "train_seconds": round(time.perf_counter() - t0, 2),
           "ensemble_prob": None if md.signal is None else dict(md.signal_source or {})}
    (out / RUN_FILE).write_text(json.dumps(run, indent=2, sort_keys=True))
    print(f"{level}: {res.timesteps} steps ({'stopped early' if res.stopped_early else 'full budget'}), "
          f"best validation reward {res.best_mean_reward:.4g} -> {out} in {run['train_seconds']} s")
    return out


def export(a: RlJob) -> Any:
    """Export the work dir's agent of a level to ONNX (parity-checked) and register it."""
    from training.rl.agents import FAMILIES, load_agent
    from training.rl.export import export_policy, register_policy

    d = a.work_dir / a.level
    res = load_agent(d)
    run = json.loads((d / RUN_FILE).read_text())
    held = np.load(d / HELDOUT_FILE)
    exp = export_policy(res.model, held)
    metrics = {"validation": {"best_mean_reward": res.best_mean_reward, "evaluations": res.evaluations},
               "timesteps": res.timesteps, "stopped_early": res.stopped_early}
    config = {"agent": res.config.to_dict(), "env": run["env"], "symbols": run["symbols"],
              "timeframe": run["timeframe"], "quick": run["quick"]}
    m = register_policy(a.registry, FAMILIES[a.level], res.model, exp, feature_service=run["feature_service"],
                        features=run["features"], train_start=run["train_start"], train_end=run["train_end"],
                        data_hash=run["data_hash"], seeds={"seed": int(run["seed"])}, config=config,
                        metrics=metrics, extra={"level": a.level, "symbols": run["symbols"],
                                                "timeframe": run["timeframe"], "regime": run["regime"],
                                                "ensemble_prob": run.get("ensemble_prob"),
                                                "data": {"start": run["start"], "end": run["end"]},
                                                "split": {k: run[k] for k in ("valid_start", "test_start",
                                                                              "test_end")}})
    print(f"{m.family}/{m.version} -> {Path(a.registry) / m.family / m.version}\n"
          f"parity max |diff| {m.parity.max_abs_diff:.2e} on {m.parity.rows} held-out observations")
    return m


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    ns = _parser().parse_args(argv)
    try:
        settings = load_settings(ns.config)
        a = RlJob(command=ns.command, level=ns.level, registry=Path(ns.registry or settings.registry_root()),
                  work_dir=ns.work_dir or Path(settings.data_dir) / "work" / "rl",
                  log_dir=ns.log_dir or Path(settings.data_dir) / "logs", data_dir=ns.data_dir,
                  symbols=None if ns.symbols is None else tuple(ns.symbols), timeframe=ns.timeframe,
                  start=ns.start, end=ns.end, regime_dir=ns.regime_dir, regime_model=ns.regime_model, seed=ns.seed, timesteps=ns.timesteps,
                  quick=ns.quick, version=ns.version, report_dir=ns.report_dir, no_progress=ns.no_progress,
                  ensemble_prob=ns.ensemble_prob, ensemble_version=ns.ensemble_version)
        if a.ensemble_prob and (a.command, a.level) != ("train", "tactical"):
            raise SettingsError("--ensemble-prob is an option of 'train tactical' (export and evaluate read it from "
                                "the run and the manifest)")
        if a.level == "hierarchy" and a.command != "evaluate":
            raise SettingsError("'hierarchy' is for evaluate only: train and export each level")
        if a.command == "train":
            train(a, settings)
        elif a.command == "export":
            export(a)
        elif a.level == "hierarchy":
            from training.rl.hierarchy_report import hierarchy_cli

            hierarchy_cli(a, settings)
        else:
            from training.rl.evaluate import evaluate_cli

            evaluate_cli(a, settings)
    except (SettingsError, ValueError, FileNotFoundError, ExportRejected) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
