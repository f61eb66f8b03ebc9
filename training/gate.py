"""The go-live gate: ``python -m training.gate``.

Usage::

    python -m training.gate --walkforward var/walkforward [--tuning var/tune] [--paper-run RUN_ID ...]
    python -m training.gate --walkforward DIR --no-paper --dry-run   # judge the backtest side only

It judges a walk-forward out-of-sample result (the directory ``python -m
training.walkforward`` wrote: ``equity.csv``, ``fills.csv``, ``windows.csv``,
``summary.json``) and the paper-trading record in the decision store against the
specification's go-live checklist, every threshold configurable (:class:`GateConfig`):

- Sharpe ratio after fees above ``min_sharpe`` (seed: 1.5), and the deflated Sharpe
  ratio (Bailey & López de Prado 2014: the Sharpe ratio less the best one expected from
  the tuning's number of trials by luck alone) above 0, with the probability that the
  true Sharpe ratio exceeds that bar at least ``min_dsr``;
- max drawdown below ``max_drawdown`` (seed: 15 %); win rate per round trip above
  ``min_win_rate`` (seed: 45 %);
- a positive return in each market regime (:func:`training.performance.regime_labels`: the
  labels the run recorded, else ``regime_model`` over the traded basket, point in time;
  bull, bear, sideways x high, low vol) with at least ``min_regime_bars`` bars;
- stability: at least ``min_positive_windows`` of the walk-forward windows positive;
- paper trading (:mod:`training.paper_record`): at least ``min_paper_days`` days (seed:
  two weeks) with the judged ensemble, no more than ``max_breaches`` limit halts, and
  fills within ``fill_tolerance_bps`` of a backtest replay of the same stored bars.

The verdict (each criterion, value, threshold, pass or fail) is written into the
registry versions of the deployed ensemble and policy (:mod:`inference.verdict`),
bound to their versions, the strategy, the decision config hash
(:func:`flows.go_live.decision_config_hash`) and the walk-forward's data hash, and to
``gate.json`` / ``gate.md`` beside the walk-forward result.  ``mode=live`` starts only
with a passing verdict for exactly that binding (:mod:`flows.go_live`).  Exit status: 0
PASS, 1 FAIL, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flows.cli import HelpFormatter
from flows.go_live import decision_config_hash, deployed_versions, judged_families, strategy_name
from flows.settings import Settings, SettingsError, load_settings
from inference.manifest import ManifestError, resolve_version_dir
from inference.verdict import Criterion, Verdict, judge, write_verdict
from training import performance as perf


@dataclass(frozen=True)
class GateConfig:
    """The gate's thresholds (the seed's checklist by default)."""

    min_sharpe: float = 1.5
    min_deflated_sharpe: float = 0.0
    min_dsr: float = 0.95
    max_drawdown: float = 0.15
    min_win_rate: float = 0.45
    min_regime_bars: int = 24 * 30  # a regime seen for less than this is reported, not judged
    regime_model: str = "rules"  # when the run recorded no regime: 'rules', 'latest' (registry) or a regime.json
    min_positive_windows: float = 0.5
    min_paper_days: float = 14.0
    max_breaches: int = 0
    fill_tolerance_bps: float = 1.0


@dataclass(frozen=True)
class Trials:
    """How many configurations the tuning tried, and the spread of their Sharpe ratios (annualised)."""

    n: int = 1
    sharpe_std: float = 0.0
    source: str = "no tuning given: one trial"


def read_run(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None, dict[str, Any]]:
    """Return (equity, fills, windows or None, summary) of a walk-forward or backtest directory."""
    eq_path = directory / "equity.csv"
    if not eq_path.is_file():
        raise SettingsError(f"--walkforward: {eq_path} not found (run python -m training.walkforward first)")
    equity = pd.read_csv(eq_path, parse_dates=["ts"]).set_index("ts")
    fills = pd.read_csv(directory / "fills.csv", parse_dates=["ts"])
    fills["qty"] = np.where(fills["side"] == "buy", fills["qty"], -fills["qty"])
    windows = pd.read_csv(directory / "windows.csv") if (directory / "windows.csv").is_file() else None
    summary_path = directory / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return equity, fills, windows, summary


def read_trials(directory: Path | None) -> Trials:
    """Return the trials of a ``python -m training.tune`` directory (``trials.csv`` with a ``sharpe`` column)."""
    if directory is None:
        return Trials()
    path = directory / "trials.csv"
    if not path.is_file():
        raise SettingsError(f"--tuning: {path} not found")
    sharpes = pd.read_csv(path)["sharpe"].astype(float).replace([np.inf, -np.inf], np.nan).dropna()
    return Trials(len(sharpes), float(sharpes.std(ddof=1)) if len(sharpes) > 1 else 0.0, str(path))


def _timeframe(index: pd.DatetimeIndex, summary: dict[str, Any]) -> str:
    if summary.get("timeframe"):
        return str(summary["timeframe"])
    step = pd.Series(index).diff().median()
    return {pd.Timedelta(minutes=1): "1m", pd.Timedelta(minutes=5): "5m", pd.Timedelta(hours=1): "1h"}.get(step, "1h")


def backtest_criteria(equity: pd.DataFrame, fills: pd.DataFrame, windows: pd.DataFrame | None,
                      summary: dict[str, Any], trials: Trials, cfg: GateConfig, registry: Path | None = None
                      ) -> list[Criterion]:
    """Return the criteria judged on the walk-forward out-of-sample result (``registry``: of ``latest``)."""
    from flows.operators.regime import resolve_model
    from training.overfitting import deflated_sharpe

    tf = _timeframe(pd.DatetimeIndex(equity.index), summary)
    curve = equity["equity"].astype(float)
    m = perf.metrics(curve, tf)
    trades = perf.trade_stats(perf.round_trips(fills))
    per_year = perf.bars_per_year(tf)
    deflated = deflated_sharpe(perf.returns_of(curve).to_numpy(), trials.n, trials.sharpe_std / math.sqrt(per_year))
    out = [judge("sharpe", m.sharpe, ">", cfg.min_sharpe, "after fees, annualised"),
           judge("deflated_sharpe", deflated.excess * math.sqrt(per_year), ">", cfg.min_deflated_sharpe,
                 f"Sharpe less the best of {trials.n} trials expected by luck ({trials.source})"),
           judge("deflated_sharpe_probability", deflated.probability, ">=", cfg.min_dsr,
                 "P(true Sharpe > that bar)"),
           judge("max_drawdown", abs(m.max_drawdown), "<", cfg.max_drawdown, "fall from the peak, as a fraction"),
           judge("win_rate", trades["win_rate"] if trades["round_trips"] else None, ">", cfg.min_win_rate,
                 f"{trades['round_trips']:.0f} round trips after fees")]
    try:
        model = None if "regime" in equity.columns else resolve_model(cfg.regime_model, registry)
    except ValueError as exc:
        raise SettingsError(f"--regime-model: {exc}") from None
    labels = perf.regime_labels(equity, model)
    table = perf.by_group(curve, labels, tf)
    for regime, row in table.iterrows():
        if regime == "warm-up":
            continue
        if row["bars"] < cfg.min_regime_bars:
            out.append(Criterion(f"regime {regime} return", float(row["return"]), ">", 0.0, True,
                                 f"only {row['bars']:.0f} bars: not judged"))
        else:
            out.append(judge(f"regime {regime} return", float(row["return"]), ">", 0.0, f"{row['bars']:.0f} bars"))
    if windows is not None and len(windows):
        col = "return" if "return" in windows else "total_return"
        share = float((windows[col].astype(float) > 0).mean())
        out.append(judge("positive_windows", share, ">=", cfg.min_positive_windows,
                         f"{(windows[col] > 0).sum()} of {len(windows)} walk-forward windows"))
    else:
        out.append(judge("positive_windows", None, ">=", cfg.min_positive_windows, "no windows.csv: not a "
                         "walk-forward result"))
    return out


def paper_criteria(settings: Settings, ensemble_version: str, runs: list[str] | None, cfg: GateConfig
                   ) -> list[Criterion]:
    """Return the criteria judged on the paper-trading record in the settings' decision store."""
    from flows.stores import open_stores
    from training.paper_record import paper_record

    stores = open_stores(settings)
    rec = paper_record(settings, stores.decision_reader(), stores.history_reader(), ensemble_version, runs)
    note = "; ".join(rec.notes)
    runs_text = f"runs {', '.join(rec.runs)}" if rec.runs else "no run"
    return [judge("paper_days", rec.days, ">=", cfg.min_paper_days, f"{runs_text} with ensemble {ensemble_version}"
                  + (f"; {note}" if note else "")),
            judge("paper_limit_breaches", float(len(rec.breaches)) if rec.runs else None, "<=", cfg.max_breaches,
                  "; ".join(rec.breaches[:3])),
            judge("paper_fill_deviation_bps", rec.fill_deviation_bps if rec.runs else None, "<=",
                  cfg.fill_tolerance_bps, f"{rec.paper_fills} paper fills, {rec.replay_fills} in the replay")]


def render(verdict: Verdict) -> str:
    """Return the verdict as a Markdown table (criterion, value, threshold, result)."""
    lines = [f"Go-live gate: **{'PASS' if verdict.passed else 'FAIL'}** for strategy `{verdict.strategy}`, "
             f"decision config `{verdict.config_hash[:12]}`, data `{verdict.data_hash[:12]}`, versions "
             + ", ".join(f"{f} `{v}`" for f, v in sorted(verdict.versions.items())), "",
             "| criterion | value | threshold | result | note |", "|---|---|---|---|---|"]
    for c in verdict.criteria:
        v = "n/a" if c.value is None else f"{c.value:.4g}"
        result = "not judged" if "not judged" in c.note else "PASS" if c.passed else "FAIL"
        lines.append(f"| {c.name} | {v} | {c.op} {c.threshold:g} | {result} | {c.note} |")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.gate", description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter)
    p.add_argument("--walkforward", type=Path, required=True, help="directory of python -m training.walkforward")
    p.add_argument("--tuning", type=Path, help="directory of python -m training.tune (its trials deflate the Sharpe)")
    p.add_argument("--config", help="settings YAML of the deployment (else $CRYPTOSTREAM_CONFIG)")
    p.add_argument("--registry", type=Path, help="registry of the deployed models (default: the settings')")
    p.add_argument("--set", action="append", default=[], dest="sets",
                   help="override a setting as the walk-forward did: a.b.c=value")
    p.add_argument("--paper-run", action="append", dest="paper_runs", help="judge only these paper run ids")
    p.add_argument("--no-paper", action="store_true", help="skip the paper record (its criteria then fail)")
    p.add_argument("--dry-run", action="store_true", help="print the verdict; write nothing into the registry")
    p.add_argument("--out", type=Path, help="where gate.json and gate.md go (default: the walk-forward directory)")
    for f in fields(GateConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                       help=f"threshold (default {f.default})")
    return p


def main(argv: list[str] | None = None) -> int:
    """Judge, print, write the verdict; return 0 on PASS, 1 on FAIL, 2 on a usage or configuration error."""
    a = _parser().parse_args(argv)
    cfg = GateConfig(**{f.name: getattr(a, f.name) for f in fields(GateConfig)})
    try:
        from training.walkforward import nested, parse_set

        settings = load_settings(a.config, **nested(parse_set(a.sets)))
        if a.registry is not None:
            settings = settings.model_copy(update={"scoring": settings.scoring.model_copy(
                update={"registry": a.registry})})
        equity, fills, windows, summary = read_run(a.walkforward)
        chash, strategy = decision_config_hash(settings), strategy_name(settings)
        ran_with = summary.get("decision_config_hash")
        if ran_with and ran_with != chash:
            raise SettingsError(f"the walk-forward ran with decision config {ran_with[:12]}, these settings hash to "
                                f"{chash[:12]}: judge with the settings it ran with")
        versions = deployed_versions(settings)
        criteria = backtest_criteria(equity, fills, windows, summary, read_trials(a.tuning), cfg,
                                     settings.registry_root())
        if a.no_paper:
            criteria.append(judge("paper_days", None, ">=", cfg.min_paper_days, "--no-paper: not checked"))
        else:
            criteria += paper_criteria(settings, versions["ensemble"], a.paper_runs, cfg)
    except (SettingsError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verdict = Verdict(all(c.passed for c in criteria), tuple(criteria), strategy, chash,
                      str(summary.get("data_hash", "unknown")), versions,
                      datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), str(a.walkforward.resolve()),
                      {"config": asdict(cfg)})
    text = render(verdict)
    print(text)
    out = a.out or a.walkforward
    out.mkdir(parents=True, exist_ok=True)
    (out / "gate.json").write_text(verdict.to_json() + "\n")
    (out / "gate.md").write_text(text)
    (out / "gate.section.md").write_text("# Go-live gate\n" + text)
    if (out / "tearsheet.html").is_file() and (out / "equity.csv").is_file():
        from training.tearsheet import render_tearsheet

        print(f"tearsheet re-rendered with the verdict: {render_tearsheet(out)}")
    if not a.dry_run:
        root = settings.registry_root()
        tf = settings.trading_timeframe()
        dirs = [resolve_version_dir(root, f, versions[f], timeframe=tf) for f in judged_families(settings, versions)]
        for path in write_verdict(dirs, verdict):
            print(f"verdict written to {path}")
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
