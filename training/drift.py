"""Drift checks of the deployed models: ``python -m training.drift {reference,check,watch}``.

- ``reference``: build (or rebuild) the training-window reference of ``drift.family``'s latest
  version from the offline store and save it beside the version, as the side file
  ``<registry>/<family>/.drift/<version>.json`` (a hidden directory: the version's own files
  and their hashes stay as the manifest lists them).  ``check`` builds it when it is missing.
- ``check``: one check. Feature PSI per symbol and feature over the newest ``drift.live_bars``
  stored rows, the ensemble's calibration over its newest ``drift.calibration_window`` settled
  predictions (:mod:`training.drift_measures`).  Writes ``<data_dir>/drift/report.json`` (the
  dashboard's *Drift* page), appends a line to ``history.jsonl``, writes the Prometheus text file
  ``drift.prom``; past ``drift.psi_alert`` or ``drift.ece_alert`` it sends a ``drift`` alert and,
  when ``drift.retrain_command`` is set and the cooldown has passed, starts that command detached
  (``python -m training.retrain daily`` is the intended one).  Exit 0: no drift; 1: drift; 2: error.
- ``watch``: ``check`` every ``drift.every_s`` and serve the gauges on ``drift.metrics_port``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    start_http_server,
    write_to_textfile,
)

from flows.cli import HelpFormatter
from flows.monitoring.alerts import Alert
from flows.monitoring.notify import Dispatcher, notifiers_from
from flows.settings import Settings, SettingsError, load_settings
from flows.stores import Stores, open_stores
from flows.timeframes import timeframe_ms
from inference.manifest import ManifestError, read_manifest, resolve_version_dir
from training.drift_measures import (
    bar_span,
    build_reference,
    calibration,
    drift_features,
    feature_drift,
    save_json,
    settled,
    timeframe_of,
)


class DriftError(RuntimeError):
    """The check cannot run: no model, no reference data; the message says what to do."""


def reference_path(registry: Path, family: str, version: str) -> Path:
    """Return the side file of a version's drift reference."""
    return registry / family / ".drift" / f"{version}.json"


def load_reference(settings: Settings, stores: Stores, rebuild: bool = False) -> tuple[dict[str, Any], Path]:
    """Return the reference of ``drift.family``'s latest version, built from the offline store if missing."""
    cfg, root = settings.drift, settings.registry_root()
    try:
        man = read_manifest(resolve_version_dir(root, cfg.family, "latest", timeframe=settings.trading_timeframe()))
    except (ManifestError, FileNotFoundError, OSError) as e:
        raise DriftError(f"no registered {cfg.family} model under {root} ({e}); train one first "
                         f"(python -m training.train {cfg.family} ...) or set drift.family") from e
    path = reference_path(root, cfg.family, man.version)
    if path.is_file() and not rebuild:
        doc: dict[str, Any] = json.loads(path.read_text())
        if doc.get("bins") == cfg.bins:
            return doc, path
    tf = timeframe_of(man.feature_service, settings.trading_timeframe())
    feats = drift_features(man.features)
    if not feats:
        raise DriftError(f"{cfg.family} {man.version} uses no bar_features column; set drift.family to a model "
                         "that does (lightgbm)")
    start = pd.Timestamp(man.train_start)
    end = pd.Timestamp(man.train_end) + pd.Timedelta(milliseconds=timeframe_ms(tf))
    frame = stores.history_reader().features(settings.symbols, tf, start, end, ["symbol", "ts", *feats])
    doc = build_reference(frame, feats, cfg.bins, cfg.min_rows, {
        "family": cfg.family, "version": man.version, "timeframe": tf, "train_start": man.train_start,
        "train_end": man.train_end, "rows": len(frame)})
    if not doc["symbols"]:
        raise DriftError(f"the offline store holds fewer than {cfg.min_rows} {tf} feature rows per symbol of "
                         f"{', '.join(settings.symbols)} in {cfg.family} {man.version}'s training window "
                         f"({man.train_start} .. {man.train_end}); backfill it (python -m training.backfill ...)")
    save_json(path, doc)
    return doc, path


def _horizon(settings: Settings) -> int:
    try:
        man = read_manifest(resolve_version_dir(settings.registry_root(), "ensemble", settings.scoring.ensemble_version,
                                                timeframe=settings.trading_timeframe()))
    except (ManifestError, FileNotFoundError, OSError):
        return 1
    return int(man.extra.get("horizon") or man.config.get("horizon") or 1)


def check(settings: Settings, stores: Stores, now: datetime | None = None) -> dict[str, Any]:
    """Run one drift check; return the report (also what ``report.json`` holds)."""
    cfg = settings.drift
    now = now or datetime.now(UTC)
    ref, ref_path = load_reference(settings, stores)
    tf = ref["timeframe"]
    step = pd.Timedelta(milliseconds=timeframe_ms(tf))
    fresh = stores.monitor_reader().freshness(settings.symbols, [tf])
    newest = fresh[fresh["group"] == "bar_features"]["last"].dropna()
    features = pd.DataFrame(columns=["symbol", "feature", "psi", "rows"])
    data_end = None
    if not newest.empty:
        data_end = newest.max()
        live = stores.history_reader().features(settings.symbols, tf, data_end - cfg.live_bars * step,
                                                data_end + pd.Timedelta(microseconds=1),
                                                ["symbol", "ts", *ref["features"]])
        live = live.groupby("symbol", sort=False).tail(cfg.live_bars)
        features = feature_drift(ref, live, cfg.min_rows)
    cal = _calibration(settings, stores, tf, data_end)
    alerts = [f"feature drift: {r.symbol} {r.feature} PSI {r.psi:.3f} > {cfg.psi_alert}"
              for r in features.itertuples() if r.psi > cfg.psi_alert]
    if cal["rows"] >= cfg.min_rows and cal["ece"] > cfg.ece_alert:
        alerts.append(f"calibration drift: ECE {cal['ece']:.3f} > {cfg.ece_alert} over {cal['rows']} settled "
                      "predictions")
    return {"checked_at": now.isoformat(), "data_end": None if data_end is None else data_end.isoformat(),
            "family": ref["family"], "version": ref["version"], "timeframe": tf, "reference": str(ref_path),
            "psi_alert": cfg.psi_alert, "ece_alert": cfg.ece_alert, "live_bars": cfg.live_bars,
            "features": features.to_dict("records"), "calibration": cal, "alerts": alerts, "retrain": None}


def _calibration(settings: Settings, stores: Stores, tf: str, data_end: pd.Timestamp | None) -> dict[str, Any]:
    cfg = settings.drift
    horizon = _horizon(settings)
    since = None
    if data_end is not None:  # enough bar times for the window on every symbol, with room for gaps
        bars = 2 * (cfg.calibration_window // len(settings.symbols) + horizon + 2)
        since = data_end - bars * pd.Timedelta(milliseconds=timeframe_ms(tf))
    preds = stores.decision_reader().table("predictions", since)
    preds = preds[(preds["model"] == "ensemble") & (preds["timeframe"] == tf)]
    preds = preds.tail(cfg.calibration_window + (horizon + 1) * len(settings.symbols))
    if preds.empty:
        return {"rows": 0, "ece": None, "brier": None, "horizon": horizon, "table": []}
    start, end = bar_span(preds, tf, horizon)
    bars = stores.history_reader().bars(sorted(set(preds["symbol"])), tf, start, end, ["symbol", "ts", "open", "close"])
    done = settled(preds[["symbol", "ts", "prob_up"]], bars, tf, horizon).tail(cfg.calibration_window)
    c = calibration(done["prob_up"].to_numpy(float), done["label"].to_numpy(float), cfg.calibration_bins)
    return {"rows": c.rows, "ece": c.ece if c.rows else None, "brier": c.brier if c.rows else None,
            "mean_prob": c.mean_prob, "up_rate": c.up_rate, "horizon": horizon, "table": c.table}


class DriftMetrics:
    """The gauges of the last check, in a registry of their own (served by ``watch``, written by ``check``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.psi = Gauge("cryptostream_feature_psi", "PSI of a feature against its training window",
                         ["symbol", "feature"], registry=r)
        self.psi_max = Gauge("cryptostream_feature_psi_max", "largest feature PSI of a symbol", ["symbol"], registry=r)
        self.ece = Gauge("cryptostream_calibration_ece", "expected calibration error of the ensemble's P(up)",
                         registry=r)
        self.brier = Gauge("cryptostream_calibration_brier", "Brier score of the ensemble's P(up)", registry=r)
        self.settled = Gauge("cryptostream_calibration_rows", "settled predictions judged", registry=r)
        self.alerts = Gauge("cryptostream_drift_alerts", "drift findings past a threshold at the last check",
                            registry=r)
        self.checked = Gauge("cryptostream_drift_last_check_timestamp_seconds", "time of the last drift check",
                             registry=r)
        self.psi_limit = Gauge("cryptostream_drift_psi_threshold", "drift.psi_alert", registry=r)
        self.ece_limit = Gauge("cryptostream_drift_ece_threshold", "drift.ece_alert", registry=r)
        self.retrains = Counter("cryptostream_drift_retrains", "retrains started on drift", registry=r)

    def update(self, report: dict[str, Any]) -> None:
        """Set the gauges from one report."""
        self.psi.clear()
        self.psi_max.clear()
        worst: dict[str, float] = {}
        for row in report["features"]:
            self.psi.labels(row["symbol"], row["feature"]).set(row["psi"])
            worst[row["symbol"]] = max(worst.get(row["symbol"], 0.0), row["psi"])
        for s, v in worst.items():
            self.psi_max.labels(s).set(v)
        cal = report["calibration"]
        self.ece.set(cal["ece"] if cal["ece"] is not None else float("nan"))
        self.brier.set(cal["brier"] if cal["brier"] is not None else float("nan"))
        self.settled.set(cal["rows"])
        self.alerts.set(len(report["alerts"]))
        self.psi_limit.set(report["psi_alert"])
        self.ece_limit.set(report["ece_alert"])
        self.checked.set(datetime.fromisoformat(report["checked_at"]).timestamp())
        if report["retrain"]:
            self.retrains.inc()


def trigger_retrain(settings: Settings, report: dict[str, Any], now: datetime) -> str | None:
    """Start ``drift.retrain_command`` detached when the report has alerts and the cooldown passed; say what ran."""
    cfg = settings.drift
    if not report["alerts"] or not cfg.retrain_command.strip():
        return None
    state = settings.data_dir / "drift" / "retrain.json"
    last = json.loads(state.read_text()).get("started") if state.is_file() else None
    if last and (now - datetime.fromisoformat(last)).total_seconds() < cfg.retrain_cooldown_s:
        return None
    argv = shlex.split(cfg.retrain_command)
    argv = [sys.executable, *argv[1:]] if argv[0] in ("python", "python3") else argv
    state.parent.mkdir(parents=True, exist_ok=True)
    log = (state.parent / "retrain.log").open("ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    save_json(state, {"started": now.isoformat(), "pid": proc.pid, "command": cfg.retrain_command,
                      "why": report["alerts"][:5]})
    return f"{cfg.retrain_command} (pid {proc.pid}, log {settings.data_dir / 'drift' / 'retrain.log'})"


def run_check(settings: Settings, metrics: DriftMetrics, now: datetime | None = None,
              dispatcher: Dispatcher | None = None) -> dict[str, Any]:
    """Check, trigger a retrain if due, publish (files, gauges, alert); return the report."""
    now = now or datetime.now(UTC)
    report = check(settings, open_stores(settings), now)
    report["retrain"] = trigger_retrain(settings, report, now)
    out = settings.data_dir / "drift"
    save_json(out / "report.json", report)
    with (out / "history.jsonl").open("a") as f:
        worst = max((r["psi"] for r in report["features"]), default=None)
        f.write(json.dumps({"checked_at": report["checked_at"], "data_end": report["data_end"], "psi_max": worst,
                            "ece": report["calibration"]["ece"], "alerts": len(report["alerts"])}) + "\n")
    metrics.update(report)
    write_to_textfile(str(out / "drift.prom"), metrics.registry)
    if report["alerts"] and dispatcher is not None and "drift" in settings.alerts.events:
        text = "\n".join(report["alerts"][:10]) + (f"\nretrain started: {report['retrain']}" if report["retrain"]
                                                   else "")
        dispatcher.submit([Alert("drift", int(now.timestamp() * 1000),
                                 f"drift in {report['family']} {report['version']} ({len(report['alerts'])} findings)",
                                 text, {"alerts": report["alerts"][:10], "retrain": report["retrain"]})])
    return report


def _lines(report: dict[str, Any]) -> list[str]:
    cal = report["calibration"]
    worst = sorted(report["features"], key=lambda r: -r["psi"])[:5]
    lines = [f"drift of {report['family']} {report['version']} ({report['timeframe']}), data up to "
             f"{report['data_end']}, reference {report['reference']}"]
    lines += [f"  PSI {r['psi']:.3f}  {r['symbol']:10} {r['feature']}  ({r['rows']} rows)" for r in worst]
    lines.append(f"  calibration: {cal['rows']} settled predictions" + (
        f", ECE {cal['ece']:.3f}, Brier {cal['brier']:.3f}" if cal["ece"] is not None else ""))
    lines += [f"  ALERT {a}" for a in report["alerts"]] or ["  no drift past the thresholds"]
    if report["retrain"]:
        lines.append(f"  retrain started: {report['retrain']}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (check: 1 when drift was found)."""
    ap = argparse.ArgumentParser(prog="python -m training.drift", description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("command", choices=("reference", "check", "watch"))
    ap.add_argument("--config", default=None, help="settings YAML (drift.*, data_dir, scoring.registry)")
    ap.add_argument("--rebuild", action="store_true", help="reference: rebuild even if the side file exists")
    args = ap.parse_args(argv)
    try:
        settings = load_settings(args.config)
        if args.command == "reference":
            doc, path = load_reference(settings, open_stores(settings), rebuild=args.rebuild)
            print(f"reference of {doc['family']} {doc['version']}: {path} ({len(doc['symbols'])} symbols, "
                  f"{len(doc['features'])} features, {doc['rows']} rows)")
            return 0
        metrics = DriftMetrics()
        dispatcher = Dispatcher(notifiers_from(settings.alerts), settings.alerts.rate_per_minute) \
            if settings.alerts.enabled else None
        try:
            if args.command == "check":
                report = run_check(settings, metrics, dispatcher=dispatcher)
                print("\n".join(_lines(report)))
                return 1 if report["alerts"] else 0
            if settings.drift.metrics_port:
                start_http_server(settings.drift.metrics_port, "127.0.0.1", registry=metrics.registry)
            while True:
                try:
                    print("\n".join(_lines(run_check(settings, metrics, dispatcher=dispatcher))), flush=True)
                except DriftError as e:
                    print(f"training.drift watch: {e}", file=sys.stderr, flush=True)
                time.sleep(settings.drift.every_s)
        finally:
            if dispatcher is not None:
                dispatcher.close()
    except (DriftError, SettingsError) as e:
        print(f"training.drift {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
