"""Fit, save and report the regime classifier: ``python -m training.regime``.

Usage::

    python -m training.regime fit CANDLES... [--daily-dir DIR] [--publication-lag-hours H] \
        [--start T0] [--end T1] [--states 8] [--seed 0] [--registry DIR]
    python -m training.regime report CANDLES... [--model PATH|latest] [--daily-dir DIR] \
        [--start T0] [--end T1] --out training/reports/research/REGIME.md
    python -m training.regime backfill CANDLE [--model PATH|latest|rules] [--daily-dir DIR] \
        [--start T0] [--end T1] --symbols BTC/USDT ETH/USDT [--config FILE]

``fit`` runs the classifier's own input computation (:class:`flows.operators.regime.RegimeTracker`)
over each candle file's hourly closes, fits a Gaussian HMM with diagonal covariances
(hmmlearn, seeded; each file one sequence), puts its states in a canonical order (by mean
trend, then mean vol) and maps each to a named regime: bull when its mean 30-day trend is
above ``trend_band`` (``band_sd`` standard deviations of the trend over the fitted rows),
bear below ``-trend_band``, else sideways; high vol when its mean log vol is above the
median over the fitted rows.  Inputs are standardised (mean and standard deviation of the
fitted rows, kept in the model) and every variance is floored at ``min_var``.  Only rows where every input is present are fitted; the
daily inputs present in ``--daily-dir`` become inputs of the model (none: prices alone).
The model is written beside the registry, to ``<registry>/../regime/<version>/regime.json``
with a ``latest`` pointer as the registry keeps its families (not inside it: the registry's
tools expect an ONNX manifest in every family).

``report`` labels the hourly closes of the first candle file (the reference, as
``regime.symbol`` in the stream) with the filtered classifier (point in time) and writes,
for each file, the regime counts, the transition matrix of the labels (hour to hour) and
the returns per regime (the next hour's return credited to the label known before it).

``backfill`` writes the ``regime`` feature group (``regime_features``, ``flows/feature_groups.py``)
for the hours of the candle file (the reference price) into the settings' offline store, through
the history sink the flow uses: the rows the flow writes for the same closes (one per symbol at
each labelled hour, ``ts`` = that close), so Feast's point-in-time join serves history too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flows.cli import HelpFormatter
from flows.operators.regime import (
    DAILY_INPUTS,
    HOUR_MS,
    INPUTS,
    MODEL_FILE,
    REGIMES,
    DailyInputs,
    HmmRegime,
    RegimeModel,
    RegimeTracker,
    RuleRegime,
    classify,
    load_daily_inputs,
    models_dir,
    resolve_model,
    state_rows,
)
from inference.manifest import LATEST_FILE


def hourly_closes(path: str | Path, start: str | None = None, end: str | None = None) -> pd.Series:
    """Return a candle file's closes at the hour boundaries, indexed by close time (ms)."""
    from flows.sources.candle_files import read_candles
    from training.backfill import _ms

    df = read_candles(Path(path), _ms(start), _ms(end))
    step = int(np.median(np.diff(df["ts"].to_numpy()))) if len(df) > 1 else HOUR_MS
    close_ts = df["ts"].to_numpy(np.int64) + step
    s = pd.Series(df["close"].to_numpy(float), index=close_ts)
    return s[s.index % HOUR_MS == 0]


def regime_inputs(closes: pd.Series, daily: DailyInputs | None, trend_days: float = 30.0,
                  vol_days: float = 7.0) -> pd.DataFrame:
    """Return the classifier's inputs (INPUTS columns) at each hourly close after warm-up, point in time."""
    tracker = RegimeTracker(RuleRegime(trend_days=trend_days, vol_days=vol_days))
    rows, idx = [], []
    for ts, px in zip(closes.index.tolist(), closes.to_numpy(float).tolist(), strict=True):
        x = tracker.inputs(int(ts), px, None if daily is None else daily.at(int(ts)))
        if x is not None:
            rows.append(x)
            idx.append(int(ts))
    return pd.DataFrame(rows, index=idx, columns=list(INPUTS))


def fit_hmm(inputs: Sequence[pd.DataFrame], names: Sequence[str], states: int = 8, seed: int = 0,
            band_sd: float = 0.5, trend_days: float = 30.0, vol_days: float = 7.0, n_iter: int = 200,
            min_var: float = 0.01, provenance: dict[str, Any] | None = None) -> HmmRegime:
    """Fit a diagonal Gaussian HMM on the rows of ``inputs`` (one sequence each) where ``names`` are present."""
    from hmmlearn.hmm import GaussianHMM

    cols = list(names)
    if cols[:2] != ["trend", "vol"] or any(n not in INPUTS for n in cols):
        raise ValueError(f"inputs must be trend, vol and some of {DAILY_INPUTS}, got {cols}")
    seqs = [df[cols].dropna().to_numpy(float) for df in inputs]
    seqs = [s for s in seqs if len(s)]
    x = np.concatenate(seqs) if seqs else np.empty((0, len(cols)))
    if len(x) < states * 50:
        raise ValueError(f"only {len(x)} complete rows of {cols} to fit {states} states (need {states * 50})")
    center, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale <= 0] = 1.0
    z = (x - center) / scale
    # a variance floor of min_var (in standard deviations squared): a point mass (funding at exactly its
    # 1 bp default, days on end) would otherwise become a state of its own with a vanishing variance
    hmm = GaussianHMM(n_components=states, covariance_type="diag", n_iter=n_iter, tol=1e-4, random_state=seed,
                      min_covar=min_var)
    hmm.fit(z, [len(s) for s in seqs])
    var = np.asarray([np.diag(c) for c in hmm.covars_])
    order = np.lexsort((hmm.means_[:, 1], hmm.means_[:, 0]))  # canonical: by mean trend, then mean vol
    start, trans = hmm.startprob_[order], hmm.transmat_[np.ix_(order, order)]
    means, var = hmm.means_[order], var[order]
    band = float(band_sd * x[:, 0].std())
    split = float(np.median(x[:, 1]))
    raw = means * scale + center
    regimes = []
    for m in raw:
        d = "bull" if m[0] > band else "bear" if m[0] < -band else "sideways"
        regimes.append(f"{d}/{'high vol' if m[1] > split else 'low vol'}")
    fit = {**(provenance or {}), "rows": len(x), "sequences": len(seqs), "seed": seed, "states": states,
           "band_sd": band_sd, "min_var": min_var, "log_likelihood": float(hmm.score(z, [len(s) for s in seqs])),
           "converged": bool(hmm.monitor_.converged), "iterations": int(hmm.monitor_.iter)}
    return HmmRegime(tuple(cols), tuple(map(float, start)), tuple(tuple(map(float, r)) for r in trans),
                     tuple(tuple(map(float, r)) for r in means), tuple(tuple(map(float, r)) for r in var),
                     tuple(regimes), trend_days, vol_days, HOUR_MS, band, split, tuple(map(float, center)),
                     tuple(map(float, scale)), fit)


def save_model(model: HmmRegime, registry: Path) -> Path:
    """Write ``<registry>/../regime/<version>/regime.json`` and point ``latest`` at it; return the file."""
    blob = model.to_json()
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + hashlib.sha256(blob.encode()).hexdigest()[:8]
    d = models_dir(registry) / version
    d.mkdir(parents=True, exist_ok=False)
    (d / MODEL_FILE).write_text(blob + "\n")
    (models_dir(registry) / LATEST_FILE).write_text(version + "\n")
    return d / MODEL_FILE


def labels(closes: pd.Series, model: RegimeModel, daily: DailyInputs | None) -> pd.DataFrame:
    """Return label, score and per-regime probabilities at each close of ``closes`` (warm-up rows: no label)."""
    states = classify(closes.index.to_numpy(np.int64), closes.to_numpy(float), model, daily)
    return pd.DataFrame({"label": [s.label if s else None for s in states],
                         "score": [s.score if s else np.nan for s in states],
                         **{r: [s.probs[i] if s else np.nan for s in states] for i, r in enumerate(REGIMES)}},
                        index=closes.index)


def report_markdown(per_symbol: dict[str, tuple[pd.Series, pd.DataFrame]], model: RegimeModel, title: str) -> str:
    """Return the report: counts, transition matrix and per-regime returns of each symbol."""
    lines = [f"# {title}", ""]
    if isinstance(model, HmmRegime):
        lines += [f"Model: Gaussian HMM, {len(model.startprob)} states, inputs {', '.join(model.inputs)}; "
                  f"trend band ±{model.trend_band:.3f}, vol split {np.exp(model.vol_split):.2f} annualised; "
                  f"fit: `{json.dumps(dict(model.fit), sort_keys=True)}`", "",
                  "| state | regime | " + " | ".join(f"mean {n}" for n in model.inputs) + " |",
                  "|---|---|" + "---|" * len(model.inputs)]
        raw = np.asarray(model.means) * np.asarray(model.scale or 1.0) + np.asarray(model.center or 0.0)
        lines += [f"| {k} | {r} | " + " | ".join(f"{v:.4g}" for v in m) + " |"
                  for k, (r, m) in enumerate(zip(model.state_regimes, raw, strict=True))]
        lines.append("")
    else:
        lines += [f"Model: rules ({model})", ""]
    for sym, (closes, lab) in per_symbol.items():
        known = lab["label"].dropna()
        ret = np.log(closes).diff().shift(-1)  # the hour after the label was known
        df = pd.DataFrame({"label": lab["label"], "ret": ret}).dropna()
        lines += [f"## {sym}", "", f"{len(known)} labelled hours, "
                  f"{pd.Timestamp(int(known.index[0]), unit='ms', tz='UTC'):%Y-%m-%d} .. "
                  f"{pd.Timestamp(int(known.index[-1]), unit='ms', tz='UTC'):%Y-%m-%d}.", "",
                  "| regime | hours | share | episodes | mean episode (h) | next-hour return, annualised | "
                  "annualised vol | hit rate |", "|---|---|---|---|---|---|---|---|"]
        episodes = (known != known.shift()).cumsum()
        for r in REGIMES:
            g = df.loc[df["label"] == r, "ret"]
            n_ep = int(episodes[known == r].nunique())
            lines.append(f"| {r} | {int((known == r).sum())} | {(known == r).mean():.1%} | {n_ep} | "
                         f"{(known == r).sum() / n_ep if n_ep else 0:.0f} | "
                         f"{g.mean() * 24 * 365:+.1%} | {g.std() * np.sqrt(24 * 365):.1%} | "
                         f"{(g > 0).mean() if len(g) else float('nan'):.1%} |")
        trans = pd.crosstab(known.shift().dropna(), known.iloc[1:]).reindex(index=REGIMES, columns=REGIMES).fillna(0)
        prob = trans.div(trans.sum(axis=1).replace(0, np.nan), axis=0)
        lines += ["", "Transition matrix of the labels (row: this hour, column: the next; probabilities):", "",
                  "| from \\ to | " + " | ".join(REGIMES) + " |", "|---|" + "---|" * len(REGIMES)]
        lines += [f"| {r} | " + " | ".join("" if np.isnan(v) else f"{v:.3f}" for v in prob.loc[r]) + " |"
                  for r in REGIMES]
        lines.append("")
    return "\n".join(lines)


def backfill_regime(settings: Any, closes: pd.Series, model: RegimeModel, daily: DailyInputs | None,
                    symbols: Sequence[str]) -> int:
    """Write the regime group's rows of ``closes`` (the reference price) for ``symbols``; return the row count."""
    from flows.sinks.history import HistorySink

    rows = state_rows(classify(closes.index.to_numpy(np.int64), closes.to_numpy(float), model, daily), symbols)
    sink = HistorySink(settings, flush_interval_s=float("inf")).build("regime-backfill", 0, 1)
    try:
        sink.write_batch(list(rows))
    finally:
        sink.close()
    return len(rows)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.regime", description=__doc__, formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("fit", "report", "backfill"):
        s = sub.add_parser(name, formatter_class=HelpFormatter)
        s.add_argument("candles", nargs="+", type=Path, help="candle files (BASE_QUOTE-TF.parquet), 1h or finer; "
                       "report: the first is the reference price the labels come from")
        s.add_argument("--daily-dir", type=Path, help="daily files (funding_rates.csv, fear_greed.csv); none: prices")
        s.add_argument("--publication-lag-hours", type=float, default=0.0, help="after the end of a value's day")
        s.add_argument("--start", help="first candle (ISO, UTC)")
        s.add_argument("--end", default="2024-01-01", help="end, exclusive (default: the development data's end)")
        s.add_argument("--registry", type=Path, default=Path("var/registry"), help="registry root")
    f = sub.choices["fit"]
    f.add_argument("--states", type=int, default=8)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--band-sd", type=float, default=0.5, help="trend band in standard deviations of the trend")
    for r in (sub.choices["report"], sub.choices["backfill"]):
        r.add_argument("--model", default="latest", help="a regime.json, 'latest' (of --registry) or 'rules'")
    sub.choices["report"].add_argument("--out", type=Path, required=True, help="Markdown file to write")
    b = sub.choices["backfill"]
    b.add_argument("--symbols", nargs="+", help="Feast entities to write the rows for (default: settings.symbols)")
    b.add_argument("--config", help="settings file (the offline store written to)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    a = _parser().parse_args(argv)
    model: HmmRegime | RuleRegime
    try:
        daily = load_daily_inputs(a.daily_dir, a.publication_lag_hours) if a.daily_dir else None
        closes = {Path(c).name.split("-")[0].replace("_", "/"): hourly_closes(c, a.start, a.end) for c in a.candles}
        if a.cmd == "fit":
            names = ["trend", "vol", *(n for n in DAILY_INPUTS if daily is not None and n in daily.names)]
            prov = {"candles": sorted(Path(c).name for c in a.candles), "start": a.start, "end": a.end,
                    "daily_dir": None if a.daily_dir is None else Path(a.daily_dir).name,
                    "publication_lag_hours": a.publication_lag_hours}
            model = fit_hmm([regime_inputs(c, daily) for c in closes.values()], names, a.states, a.seed,
                            a.band_sd, provenance=prov)
            path = save_model(model, a.registry)
            print(f"regime model: {path} (states -> {', '.join(model.state_regimes)})")
        elif a.cmd == "backfill":
            from flows.settings import load_settings

            settings = load_settings(a.config)
            n = backfill_regime(settings, next(iter(closes.values())), resolve_model(a.model, a.registry), daily,
                                tuple(a.symbols or settings.symbols))
            print(f"regime_features: {n} rows")
        else:
            model = resolve_model(a.model, a.registry)
            ref = labels(next(iter(closes.values())), model, daily)  # the first file is the reference price
            per = {s: (c, ref.reindex(c.index)) for s, c in closes.items()}
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(report_markdown(per, model, f"Regimes, {a.start or 'start'} .. {a.end}") + "\n")
            print(f"report: {a.out}")
    except ValueError as exc:
        print(f"training.regime: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
