"""Scheduled retraining: a challenger replaces the champion only through the gate and a comparison.

    python -m training.retrain daily   # refresh the members and the ensemble on the recent window
    python -m training.retrain weekly  # every model on the long window, and the tactical policy
    python -m training.retrain weekly --now 2024-01-08T00:00:00Z   # as if run then (replays, catch-up)

Steps (settings ``retrain``, :class:`flows.settings.RetrainSettings`), each one an event of the
registry's log (:mod:`inference.promotions`, shown on the dashboard's models page) and a
``model`` alert (:mod:`flows.monitoring.alerts`):

1. ``backfill``: the new bars from the exchange through ccxt (``training.backfill exchange``)
   into the offline store, up to the last closed bar before ``now``;
2. ``train``: point-in-time sets and the models (``training.train``; weekly also
   ``training.rl train`` + ``export``) into a staging registry under
   ``<data_dir>/work/retrain/<run>/``, on the window that ends where the comparison window
   (the last ``compare_days``) begins, so that window is out of sample for both models;
3. ``export``: every staged version re-verified (file hashes) with its export parity in
   tolerance (an export that failed parity was never registered);
4. ``gate``: the challenger backtested on the comparison window and judged by
   ``training.gate``'s backtest criteria (thresholds ``retrain.gate``); the verdict is
   stored on the challenger's versions (the paper record is judged at go-live);
5. ``compare``: the champion backtested on the same bars; the challenger must reach the
   champion's ``metric`` + ``margin`` without a drawdown worse by more than ``max_drawdown_margin``
   (the comparison window's backtest is also cut in 4 parts, ``windows.csv``, for the gate's
   share of positive windows);
6. ``promote``: the staged versions copied into the registry and promoted as one event;
   the swap key (``scoring.swap_key``) set, so running flows reload without a restart.

Any failure, and any refusal, stops there: the champion stays, and the event says why.
Exit codes: 0 promoted, 1 challenger refused (recorded), 2 a step failed, 3 skipped: another run
holds the lock (:func:`run_lock`; runs never overlap).
"""

from __future__ import annotations

import argparse
import fcntl
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from flows.cli import HelpFormatter
from flows.operators.features import WARMUP
from flows.settings import Settings, SettingsError, load_settings
from flows.timeframes import timeframe_ms
from inference.manifest import ManifestError, pointed_timeframes, verify
from inference.promotions import RegistryEvent, append_event, promote, rollback

Kind = Literal["daily", "weekly"]
QUICK = {"lightgbm": ["--folds", "2"],
         "lstm": ["--folds", "2", "--epochs", "2", "--hidden", "8", "--bptt", "8", "--burn-in", "8", "--segment", "64"],
         "gnn": ["--folds", "2", "--epochs", "2", "--hidden", "8", "--graph-window", "30"]}


COMPARE_WINDOWS = 4  # the comparison window's parts, each judged for a positive return (the gate's stability)


class StepFailed(RuntimeError):
    """A step of the job could not be done (the champion stays)."""


@dataclass
class Outcome:
    """What one run of the job did."""

    run: str
    promoted: bool = False
    refused: str = ""  # why the challenger was not promoted (gate or comparison)
    failed: str = ""  # the step that failed, and why
    challenger: dict[str, str] = field(default_factory=dict)
    figures: dict[str, dict[str, float]] = field(default_factory=dict)  # challenger / champion -> metrics

    @property
    def exit_code(self) -> int:
        """Return 0 when promoted, 1 when refused, 2 when a step failed."""
        return 2 if self.failed else 0 if self.promoted else 1


def windows(now: datetime, timeframe: str, days: float, compare_days: float) -> tuple[datetime, datetime, datetime]:
    """Return (training start, comparison start, end): the end is ``now`` floored to the timeframe."""
    step = timeframe_ms(timeframe)
    end_ms = int(now.timestamp() * 1000) // step * step
    end = datetime.fromtimestamp(end_ms / 1000, tz=UTC)
    split = end - timedelta(days=compare_days)
    return split - timedelta(days=days), split, end


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _call(what: str, main: Callable[[list[str]], int], argv: list[str]) -> None:
    """Run a command line's ``main`` in this process, as a user would type it; raise on a non-zero exit."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 2
    if code != 0:
        raise StepFailed(f"{what} exited {code}")


class RetrainJob:
    """One run of the daily or weekly job (see module docstring)."""

    def __init__(self, settings: Settings, kind: Kind, now: datetime, notify: Callable[[Any], None] | None = None
                 ) -> None:
        self.settings, self.kind, self.now = settings, kind, now
        self.cfg = settings.retrain
        self.tf = self.cfg.timeframe or settings.trading_timeframe()
        self.root = settings.registry_root()
        self.run = f"{kind}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"
        self.work = Path(settings.data_dir) / "work" / "retrain" / self.run
        self.staging = self.work / "registry"
        self.by = f"python -m training.retrain {kind}"
        days = self.cfg.daily_days if kind == "daily" else self.cfg.weekly_days
        self.start, self.split, self.end = windows(now, self.tf, days, self.cfg.compare_days)
        self.notify = notify if notify is not None else _notifier(settings)
        self.outcome = Outcome(self.run)

    # -- the log -------------------------------------------------------------------------------------------------
    def event(self, step: str, ok: bool = True, versions: Mapping[str, str] | None = None, **detail: Any) -> None:
        """Record one step in the registry's log and send it as a ``model`` alert."""
        from flows.monitoring.alerts import model_alert

        ev = append_event(self.root, RegistryEvent(f"retrain:{step}", self.tf, datetime.now(UTC).isoformat(),
                                                   self.by, dict(versions or {}), ok=ok,
                                                   detail={"run": self.run, **detail}))
        self.notify(model_alert(ev.kind, self.tf, ok, ev.describe(), int(datetime.now(UTC).timestamp() * 1000),
                                {"run": self.run, "versions": ev.versions, **detail}))

    # -- the steps -----------------------------------------------------------------------------------------------
    def backfill(self) -> None:
        """Fetch the window's bars (with the features' warm-up before it) into the offline store."""
        from training.backfill import main as backfill_main

        warm = timedelta(milliseconds=timeframe_ms(self.tf) * (WARMUP + 1))
        _call("training.backfill exchange", backfill_main,
              ["exchange", "--symbols", *self.settings.symbols, "--timeframe", self.tf,
               "--start", _iso(self.start - warm), "--end", _iso(self.end)])
        self.event("backfill", start=_iso(self.start - warm), end=_iso(self.end))

    def train(self) -> dict[str, str]:
        """Train the challenger into the staging registry; return family -> staged version."""
        from training.train import main as train_main

        if self.staging.exists():
            shutil.rmtree(self.staging)
        window = ["--symbols", *self.settings.symbols, "--timeframe", self.tf, "--start", _iso(self.start),
                  "--end", _iso(self.split), "--registry", str(self.staging), "--seed", str(self.cfg.seed)]
        for fam in self.cfg.members:
            _call(f"training.train {fam}", train_main, [fam, *window, *(QUICK[fam] if self.cfg.quick else [])])
        _call("training.train ensemble", train_main, ["ensemble", "--registry", str(self.staging), "--timeframe",
                                                      self.tf, "--members", *self.cfg.members])
        staged = {f: v for f in [*self.cfg.members, "ensemble"]
                  for v in [pointed_timeframes(self.staging, f).get(self.tf)] if v}
        policy = self.settings.scoring.policy_family
        if policy and self.kind == "weekly" and self.cfg.policies:
            staged[policy] = self._train_policy(policy)
        elif policy and pointed_timeframes(self.root, policy).get(self.tf):  # the champion's policy rides along
            version = pointed_timeframes(self.root, policy)[self.tf]
            shutil.copytree(self.root / policy / version, self.staging / policy / version)
            from inference.promotions import set_pointer

            set_pointer(self.staging, policy, self.tf, version)
        self.event("train", versions=staged, start=_iso(self.start), end=_iso(self.split))
        return staged

    def _train_policy(self, policy: str) -> str:
        from training.rl.__main__ import main as rl_main

        level = policy.removeprefix("rl_")
        common = ["--registry", str(self.staging), "--timeframe", self.tf, "--start", _iso(self.start),
                  "--end", _iso(self.split), "--seed", str(self.cfg.seed), "--no-progress",
                  "--work-dir", str(self.work / "rl")]
        _call(f"training.rl train {level}", rl_main, ["train", level, *common, *(["--quick"] if self.cfg.quick else [])])
        _call(f"training.rl export {level}", rl_main, ["export", level, *common])
        return pointed_timeframes(self.staging, policy)[self.tf]

    def export(self, staged: Mapping[str, str]) -> None:
        """Re-verify every staged version and its recorded export parity."""
        for fam, version in staged.items():
            m = verify(self.staging / fam / version)
            if m.parity.max_abs_diff > m.parity.tolerance:
                raise StepFailed(f"{fam}/{version}: export parity {m.parity.max_abs_diff:.2e} > {m.parity.tolerance}")
        self.event("export", versions=staged)

    def backtest(self, registry: Path, out: Path, streams: Mapping[str, list[Any]]) -> dict[str, float]:
        """Backtest one registry on the comparison window; write its outputs; return the strategy's figures."""
        from training.backtest import run_backtest, write_outputs

        sc = self.settings.scoring.model_copy(update={"registry": registry, "timeframe": self.tf})
        settings = self.settings.model_copy(update={"scoring": sc})
        result = run_backtest(settings, {s: iter(b) for s, b in streams.items()}, self.tf,
                              int(self.split.timestamp() * 1000), chunk=256)
        summary = result.summary(self.tf)
        write_outputs(out, result, summary)
        if "strategy" not in summary:
            raise StepFailed(f"no closes to trade in the comparison window {_iso(self.split)} .. {_iso(self.end)}")
        equity = pd.Series(result.equity, index=pd.to_datetime(result.times, unit="ms", utc=True))
        parts = [p for p in np.array_split(np.arange(len(equity)), COMPARE_WINDOWS) if len(p)]
        starts = [equity.iloc[max(p[0] - 1, 0)] for p in parts]  # each part from the previous one's last close
        pd.DataFrame({"start": [equity.index[p[0]] for p in parts], "end": [equity.index[p[-1]] for p in parts],
                      "return": [equity.iloc[p[-1]] / s0 - 1.0 for p, s0 in zip(parts, starts, strict=True)]}
                     ).to_csv(out / "windows.csv", index=False)
        return {k: float(v) for k, v in summary["strategy"].items() if isinstance(v, (int, float))}

    def gate(self, staged: Mapping[str, str], streams: Mapping[str, list[Any]]) -> bool:
        """Judge the challenger's comparison-window backtest with the gate's criteria; store the verdict."""
        from flows.go_live import decision_config_hash, strategy_name
        from inference.verdict import Verdict, write_verdict
        from training.gate import GateConfig, Trials, backtest_criteria, read_run

        names = {f.name for f in fields(GateConfig)}
        unknown = sorted(set(self.cfg.gate) - names)
        if unknown:
            raise SettingsError(f"retrain.gate: unknown thresholds {unknown}; known: {sorted(names)}")
        defaults = GateConfig()
        cfg = GateConfig(**{k: type(getattr(defaults, k))(v) for k, v in self.cfg.gate.items()})
        out = self.work / "challenger"
        self.outcome.figures["challenger"] = self.backtest(self.staging, out, streams)
        equity, fills, windows_, summary = read_run(out)
        criteria = backtest_criteria(equity, fills, windows_, summary, Trials(), cfg)
        verdict = Verdict(all(c.passed for c in criteria), tuple(criteria), strategy_name(self.settings),
                          decision_config_hash(self.settings), f"retrain {self.run}", dict(staged),
                          datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), str(out),
                          {"config": {k: getattr(cfg, k) for k in names}, "paper": "judged at go-live"})
        judged = [f for f in ("ensemble", self.settings.scoring.policy_family) if f and f in staged]
        write_verdict([self.staging / f / staged[f] for f in judged], verdict)
        failed = [c.describe() for c in verdict.failed]
        self.event("gate", ok=verdict.passed, versions=staged, failed=failed,
                   reason="passed" if verdict.passed else "; ".join(failed))
        if not verdict.passed:
            self.outcome.refused = "gate: " + "; ".join(failed)
        return verdict.passed

    def compare(self, staged: Mapping[str, str], streams: Mapping[str, list[Any]]) -> bool:
        """Backtest the champion on the same bars; return whether the challenger beats it by the margin."""
        cfg, new = self.cfg, self.outcome.figures["challenger"]
        if not pointed_timeframes(self.root, "ensemble").get(self.tf):
            self.event("compare", versions=staged, reason=f"no {self.tf} champion: the challenger is the first")
            return True
        old = self.outcome.figures["champion"] = self.backtest(self.root, self.work / "champion", streams)
        better = new[cfg.metric] >= old[cfg.metric] + cfg.margin
        safe = abs(new["max_drawdown"]) <= abs(old["max_drawdown"]) + cfg.max_drawdown_margin
        reason = (f"{cfg.metric} {new[cfg.metric]:.4g} vs champion {old[cfg.metric]:.4g} (margin {cfg.margin:g}); "
                  f"max drawdown {abs(new['max_drawdown']):.4g} vs {abs(old['max_drawdown']):.4g} "
                  f"(margin {cfg.max_drawdown_margin:g})")
        self.event("compare", ok=better and safe, versions=staged, reason=reason, challenger=new, champion=old)
        if not (better and safe):
            self.outcome.refused = "compare: " + reason
        return better and safe

    def promote(self, staged: Mapping[str, str]) -> None:
        """Copy the staged versions into the registry, promote them as one event, and ask flows to swap."""
        for fam, version in staged.items():
            if not (self.root / fam / version).exists():
                shutil.copytree(self.staging / fam / version, self.root / fam / version)
        reason = (f"passed the gate and beat the champion on {self.cfg.metric} by >= {self.cfg.margin:g} over "
                  f"{_iso(self.split)} .. {_iso(self.end)}")
        promote(self.root, self.tf, staged, self.by, reason, detail={"run": self.run})
        try:
            trigger_swap(self.settings, self.tf, staged)
        except Exception as exc:  # noqa: BLE001 (flows not told: undo, so registry and flows agree on the champion)
            rollback(self.root, self.tf, self.by, f"swap key not written: {exc}")
            raise
        self.event("promote", versions=staged, reason=reason)
        self.outcome.promoted = True

    # -- the whole job -------------------------------------------------------------------------------------------
    def __call__(self) -> Outcome:
        """Run every step; on a failure or a refusal, stop with the champion in place."""
        from training.klines import exchange_streams

        step = "backfill"
        try:
            self.event("start", kind=self.kind, window=f"{_iso(self.start)} .. {_iso(self.split)}",
                       compare=f"{_iso(self.split)} .. {_iso(self.end)}")
            self.backfill()
            step = "train"
            staged = self.outcome.challenger = self.train()
            step = "export"
            self.export(staged)
            step = "gate"
            warm = timedelta(milliseconds=timeframe_ms(self.tf) * (WARMUP + 1))
            streams = {s: list(it) for s, it in exchange_streams(
                self.settings, tuple(self.settings.symbols), self.tf, int((self.split - warm).timestamp() * 1000),
                int(self.end.timestamp() * 1000)).items()}
            if not self.gate(staged, streams):
                return self.outcome
            step = "compare"
            if not self.compare(staged, streams):
                return self.outcome
            step = "promote"
            self.promote(staged)
        except Exception as exc:  # noqa: BLE001 (any failure of any step leaves the champion: say which and why)
            self.outcome.failed = f"{step}: {type(exc).__name__}: {exc}"
            self.event(step, ok=False, message=f"{type(exc).__name__}: {exc}")
        return self.outcome


@contextmanager
def run_lock(settings: Settings) -> Iterator[bool]:
    """Hold the retraining lock (``<data_dir>/work/retrain/retrain.lock``) if free; yield whether it was taken.

    An ``flock``: released by the kernel when the holder ends, however it ends, so a crashed run
    never blocks the next one.  Cron, systemd and ``training.schedule`` runs all take it.
    """
    path = Path(settings.data_dir) / "work" / "retrain" / "retrain.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_once(settings: Settings, kind: Kind, now: datetime, by: str = "",
             job: Callable[[], Outcome] | None = None) -> Outcome | None:
    """Run the job (default :class:`RetrainJob`) under :func:`run_lock`; ``None`` if a run holds it (logged)."""
    with run_lock(settings) as taken:
        if taken:
            return job() if job is not None else RetrainJob(settings, kind, now)()
    tf = settings.retrain.timeframe or settings.trading_timeframe()
    append_event(settings.registry_root(), RegistryEvent(
        "retrain:skipped", tf, datetime.now(UTC).isoformat(), by or f"python -m training.retrain {kind}", ok=False,
        detail={"reason": "another retraining run holds the lock"}))
    print(f"{kind}: another retraining run holds the lock, skipped", file=sys.stderr)
    return None


def trigger_swap(settings: Settings, timeframe: str, versions: Mapping[str, str]) -> None:
    """Set the profile's swap key to a new value: every running flow reloads its timeframe's versions."""
    from flows.stores import open_stores

    value = f"{timeframe} " + " ".join(f"{f}={v}" for f, v in sorted(versions.items()))
    open_stores(settings).swap_trigger().write(value.encode())


def _notifier(settings: Settings) -> Callable[[Any], None]:
    """Return a function sending an alert to the settings' destinations (if ``model`` alerts are on)."""
    from flows.monitoring.notify import DeliveryError, notifiers_from

    sinks = notifiers_from(settings.alerts) if "model" in settings.alerts.events else []

    def send(alert: Any) -> None:
        for n in sinks:
            try:
                n.send(alert)
            except DeliveryError as exc:  # an alert that cannot go out never stops the job
                print(f"alert not delivered: {exc}", file=sys.stderr)

    return send


def main(argv: list[str] | None = None) -> int:
    """Run the daily or weekly job; see the module docstring for the exit codes."""
    p = argparse.ArgumentParser(prog="python -m training.retrain", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("kind", choices=("daily", "weekly"))
    p.add_argument("--config", help="settings YAML (else $CRYPTOSTREAM_CONFIG)")
    p.add_argument("--now", help="run as of this time, ISO 8601 UTC (default: the clock)")
    a = p.parse_args(argv)
    try:
        settings = load_settings(a.config)
        now = pd.Timestamp(a.now).to_pydatetime() if a.now else datetime.now(UTC)
        if now.tzinfo is None:
            raise SettingsError(f"--now {a.now!r} must carry a time zone (e.g. a trailing Z)")
        got = run_once(settings, a.kind, now)
    except (SettingsError, ManifestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if got is None:
        return 3
    out = got
    champion = out.figures.get("champion")
    print(f"{out.run}: {'promoted ' + str(out.challenger) if out.promoted else 'champion kept'}"
          + (f"; refused: {out.refused}" if out.refused else "") + (f"; failed: {out.failed}" if out.failed else ""))
    if out.figures:
        print(f"  challenger {out.figures.get('challenger')}\n  champion   {champion}")
    return out.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
