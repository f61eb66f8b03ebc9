"""Tuning that cannot fool the gate: ``python -m training.tune``.

Usage::

    python -m training.tune ../shared/data/binance-spot-1h/*.parquet --train-start 2020-09-01 \\
        --start 2022-01-01 --end 2024-01-01 --holdout-start 2024-01-01 --trials 20 --seed 7 \\
        --space scoring.confidence_threshold=float:0.0:0.4 --space risk.sizing.vol_target=float:0.1:0.4 \\
        [--space train.horizon=int:1:12] [--config FILE] [--out var/tune]

An Optuna TPE search (seeded: the same command gives the same trials) over dotted
settings paths (the strategy's parameters, sizing, scoring thresholds) and the models'
parameters (``train.horizon``, ``train.threshold``).  Each trial is a walk-forward
(:mod:`training.walkforward`) over the development span only: ``--end`` must not pass
``--holdout-start``, so the hold-out is never seen by a trial.  The objective is the
concatenated out-of-sample Sharpe ratio after fees.  Models are trained once per window
and per set of model parameters and shared by the trials that use them.

Reported (``REPORT.md``, ``trials.csv``, ``best.yaml``, ``best.json``): the number of
trials, every trial's parameters and figures, the best trial, its deflated Sharpe ratio
given the number of trials and the spread of their Sharpe ratios (Bailey & López de
Prado 2014) and the probability of backtest overfitting by CSCV over the trials' per-bar
returns (Bailey, Borwein, López de Prado & Zhu 2015) (:mod:`training.overfitting`).
``python -m training.gate --tuning OUT`` deflates the walk-forward's Sharpe ratio by
these trials.  Space: ``path=float:LOW:HIGH``, ``path=int:LOW:HIGH``, ``path=log:LOW:HIGH``,
``path=choice:A,B,C``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from flows.cli import HelpFormatter
from flows.settings import SettingsError
from training.walkforward import WalkForwardJob, merged, nested, run

TRAIN_PARAMS = ("horizon", "threshold")  # train.<name>: the models' parameters a trial may change
LGB_PREFIX = "train.lgb."  # train.lgb.<name>: a LightGBM parameter (num_leaves, learning_rate, ...)


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: a dotted path and its distribution."""

    path: str
    kind: str  # float, int, log, choice
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter for an Optuna trial."""
        if self.kind == "float":
            return trial.suggest_float(self.path, self.low, self.high)
        if self.kind == "log":
            return trial.suggest_float(self.path, self.low, self.high, log=True)
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high))
        return trial.suggest_categorical(self.path, list(self.choices))


def parse_space(items: Sequence[str]) -> list[Dimension]:
    """Parse ``--space path=kind:low:high`` (or ``path=choice:a,b``) items."""
    import yaml

    out = []
    for item in items:
        path, sep, spec = item.partition("=")
        kind, _, rest = spec.partition(":")
        if not sep or not path or kind not in ("float", "int", "log", "choice"):
            raise SettingsError(f"--space {item!r}: write path=float:LOW:HIGH, int:LOW:HIGH, log:LOW:HIGH or "
                                "choice:A,B")
        if path.startswith("train.") and not path.startswith(LGB_PREFIX) and path.split(".", 1)[1] not in TRAIN_PARAMS:
            raise SettingsError(f"--space {item!r}: the models' parameters are train.{', train.'.join(TRAIN_PARAMS)}"
                                f" and {LGB_PREFIX}<LightGBM parameter>")
        if kind == "choice":
            out.append(Dimension(path, kind, choices=tuple(yaml.safe_load(c) for c in rest.split(","))))
            continue
        try:
            low, high = (float(x) for x in rest.split(":"))
        except ValueError:
            raise SettingsError(f"--space {item!r}: {kind} needs LOW:HIGH") from None
        if not low < high:
            raise SettingsError(f"--space {item!r}: LOW must be below HIGH")
        out.append(Dimension(path, kind, low, high))
    return out


def trial_job(base: WalkForwardJob, params: Mapping[str, Any], out: Path) -> WalkForwardJob:
    """Return the walk-forward of one trial: its settings overrides and model parameters, shared models."""
    lgb = {k[len(LGB_PREFIX):]: v for k, v in params.items() if k.startswith(LGB_PREFIX)}
    train = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("train.") and k not in
             {LGB_PREFIX + n for n in lgb}}
    settings = {k: v for k, v in params.items() if not k.startswith("train.")}
    job = replace(base, overrides={**base.overrides, **settings}, lgb_params={**base.lgb_params, **lgb}, **train)
    key = hashlib.sha256(json.dumps({**{k: getattr(job, k) for k in TRAIN_PARAMS}, "lgb": dict(job.lgb_params)},
                                    sort_keys=True).encode())
    return replace(job, out=out, models_dir=base.out / f"models-{key.hexdigest()[:10]}")


def per_bar_returns(out: Path) -> pd.Series:
    """Return the per-bar returns of a trial's out-of-sample equity."""
    eq = pd.read_csv(out / "equity.csv", parse_dates=["ts"]).set_index("ts")["equity"]
    return eq.pct_change().dropna()


def tune(base: WalkForwardJob, space: Sequence[Dimension], n_trials: int, seed: int) -> pd.DataFrame:
    """Run the search; return one row per trial (parameters, Sharpe, return, drawdown, fills)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = {d.path: d.suggest(trial) for d in space}
        out = base.out / "trials" / f"trial-{trial.number:03d}"
        _, summary = run(trial_job(base, params, out))
        m = summary.get("strategy", {})
        sharpe = float(m.get("sharpe", 0.0))
        rows.append({"trial": trial.number, **params, "sharpe": sharpe, "total_return": m.get("total_return", 0.0),
                     "max_drawdown": m.get("max_drawdown", 0.0), "fills": summary.get("fills", 0),
                     "fees": summary.get("fees", 0.0)})
        print(f"trial {trial.number}: {params} -> sharpe {sharpe:+.2f}", flush=True)
        return sharpe

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    return pd.DataFrame(rows)


def overfitting_figures(base: WalkForwardJob, trials: pd.DataFrame, timeframe: str) -> dict[str, Any]:
    """Return the best trial's deflated Sharpe ratio and the search's PBO (CSCV over per-bar returns)."""
    from training.overfitting import deflated_sharpe, pbo_cscv
    from training.performance import bars_per_year

    per_year = bars_per_year(timeframe)
    best = int(trials.loc[trials["sharpe"].idxmax(), "trial"])
    returns = {int(t): per_bar_returns(base.out / "trials" / f"trial-{int(t):03d}") for t in trials["trial"]}
    std = float(trials["sharpe"].std(ddof=1)) / math.sqrt(per_year) if len(trials) > 1 else 0.0
    d = deflated_sharpe(returns[best].to_numpy(), len(trials), std)
    out: dict[str, Any] = {"trials": len(trials), "best_trial": best, "best_sharpe": float(trials["sharpe"].max()),
                           "deflated_sharpe": d.excess * math.sqrt(per_year), "sr0": d.sr0 * math.sqrt(per_year),
                           "dsr_probability": d.probability, "pbo": float("nan")}
    matrix = pd.DataFrame(returns).dropna()
    if matrix.shape[1] >= 2 and len(matrix) >= 32:
        out["pbo"] = pbo_cscv(matrix.to_numpy(), 16)
    return out


def write_report(base: WalkForwardJob, trials: pd.DataFrame, figures: Mapping[str, Any], space: Sequence[Dimension]
                 ) -> None:
    """Write trials.csv, best.yaml (settings), best.json (all parameters and figures) and REPORT.md."""
    import yaml

    trials.to_csv(base.out / "trials.csv", index=False)
    best = trials.loc[trials["sharpe"].idxmax()]
    params = {d.path: (best[d.path].item() if hasattr(best[d.path], "item") else best[d.path]) for d in space}
    settings = {k: v for k, v in params.items() if not k.startswith("train.")}
    doc = yaml.safe_load(Path(base.config).read_text()) if base.config else {}
    (base.out / "best.yaml").write_text(yaml.safe_dump(merged(doc or {}, nested({**base.overrides, **settings})),
                                                       sort_keys=True))
    (base.out / "best.json").write_text(json.dumps({"params": params, **figures}, indent=2, default=float) + "\n")
    table = trials.sort_values("trial").to_markdown(index=False, floatfmt=".4f")
    pbo = figures["pbo"]
    (base.out / "REPORT.md").write_text(
        f"# Tuning on development windows {base.start} .. {base.end}\n\n"
        f"{figures['trials']} trials (Optuna TPE, seed in the command), every {base.every_bars or base.every}, "
        f"trained from {base.train_start}; objective: the concatenated out-of-sample Sharpe ratio after fees.\n\n"
        f"- best trial {figures['best_trial']}: Sharpe {figures['best_sharpe']:+.2f} with {params}\n"
        f"- expected best Sharpe of {figures['trials']} skill-less trials: {figures['sr0']:.2f}; deflated Sharpe "
        f"{figures['deflated_sharpe']:+.2f}, probability the true Sharpe beats that bar (DSR) "
        f"{figures['dsr_probability']:.3f}\n"
        f"- probability of backtest overfitting (CSCV, 16 blocks of the trials' per-bar returns): "
        f"{'n/a' if pbo != pbo else f'{pbo:.2f}'}\n\n## Trials\n\n{table}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the search; return 0, or 2 on a usage or configuration error."""
    from training.walkforward import parse_args as wf_args

    p = argparse.ArgumentParser(prog="python -m training.tune", description=__doc__.split("\n\n")[0], add_help=True,
        formatter_class=HelpFormatter)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--space", action="append", default=[], help="path=float:LOW:HIGH (repeat)")
    p.add_argument("--holdout-start", required=True, help="first bar of the hold-out: no trial may reach it")
    a, rest = p.parse_known_args(argv)
    try:
        base = wf_args([*rest, *([] if "--out" in rest else ["--out", "var/tune"])])
        space = parse_space(a.space)
        if not space:
            raise SettingsError("--space: give at least one parameter to search")
        if pd.Timestamp(base.end, tz="UTC") > pd.Timestamp(a.holdout_start, tz="UTC"):
            raise SettingsError(f"--end {base.end} passes --holdout-start {a.holdout_start}: tuning may only see "
                                "development data")
        trials = tune(base, space, a.trials, base.seed)
        tf = json.loads((base.out / "trials" / "trial-000" / "summary.json").read_text()).get("timeframe", "1h")
        figures = overfitting_figures(base, trials, tf)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_report(base, trials, figures, space)
    print((base.out / "REPORT.md").read_text().split("## Trials")[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
