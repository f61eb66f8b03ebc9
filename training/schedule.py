"""Run the retraining jobs at their configured times (APScheduler), never two at once.

    python -m training.schedule            # runs until stopped (Ctrl-C, SIGTERM)
    python -m training.schedule --once     # only catch up what was missed, then exit

The times are the settings' ``retrain.daily_cron`` and ``retrain.weekly_cron`` (crontab,
UTC).  Each run goes through :func:`training.retrain.run_once`, which holds the retraining
lock: a trigger that fires while a run (from here, cron or a user) holds it is skipped and
logged, not queued.  The last fire time of each job is kept in
``<data_dir>/work/retrain/schedule.json``; at start, a job whose slots passed since (the
machine was off, the scheduler stopped) runs once, not once per missed slot, if the latest
missed slot is within ``retrain.misfire_grace_s``.  While running, APScheduler coalesces
missed fire times the same way (``coalesce``) and keeps one instance per job.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from flows.cli import HelpFormatter
from flows.settings import Settings, SettingsError, load_settings

KINDS = ("daily", "weekly")
Runner = Callable[[str, datetime], Any]  # (kind, now) -> the run's outcome, None when skipped


def trigger(expr: str, field: str) -> CronTrigger:
    """Return the UTC cron trigger of a crontab line; a bad line names the setting."""
    try:
        return CronTrigger.from_crontab(expr, timezone=UTC)
    except ValueError as exc:
        raise SettingsError(f"retrain.{field} = {expr!r} is not a crontab line (minute hour day month weekday, "
                            f"e.g. '30 2 * * *'): {exc}") from None


class RetrainSchedule:
    """The jobs, their last fire times, and the catch-up of missed slots."""

    def __init__(self, settings: Settings, run: Runner | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        cfg = settings.retrain
        self.settings, self.clock = settings, clock
        self.triggers = {"daily": trigger(cfg.daily_cron, "daily_cron"),
                         "weekly": trigger(cfg.weekly_cron, "weekly_cron")}
        self.grace = timedelta(seconds=cfg.misfire_grace_s)
        self.state_path = Path(settings.data_dir) / "work" / "retrain" / "schedule.json"
        self.run = run or self._retrain

    def _retrain(self, kind: str, now: datetime) -> Any:
        from training.retrain import run_once

        return run_once(self.settings, kind, now, by="python -m training.schedule")  # type: ignore[arg-type]

    def last(self) -> dict[str, datetime]:
        """Return each job's last fire time from the state file (none yet: absent)."""
        if not self.state_path.is_file():
            return {}
        try:
            raw = json.loads(self.state_path.read_text())
            return {k: datetime.fromisoformat(v) for k, v in raw.items() if k in KINDS}
        except (ValueError, TypeError, AttributeError):
            return {}  # a damaged state file: start afresh rather than refuse to schedule

    def _remember(self, kind: str, at: datetime) -> None:
        state = {k: v.isoformat() for k, v in self.last().items()}
        state[kind] = at.isoformat()
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, sort_keys=True))
        tmp.replace(self.state_path)

    def missed(self, kind: str, now: datetime) -> list[datetime]:
        """Return the job's slots after its last fire time, up to ``now``."""
        since = self.last().get(kind)
        if since is None:
            return []
        out: list[datetime] = []
        t = self.triggers[kind].get_next_fire_time(since, since)
        while t is not None and t <= now:
            out.append(t)
            t = self.triggers[kind].get_next_fire_time(t, t)
        return out

    def fire(self, kind: str) -> Any:
        """Run one job now (under the retraining lock) and remember the time."""
        now = self.clock()
        outcome = self.run(kind, now)
        if outcome is not None:  # a skipped run is not a run: its slot stays missed for the next start
            self._remember(kind, now)
        return outcome

    def catch_up(self) -> list[str]:
        """Run once each job that missed slots within the grace time; return the jobs run."""
        now, ran = self.clock(), []
        for kind in KINDS:
            slots = self.missed(kind, now)
            if slots and now - slots[-1] <= self.grace:
                print(f"{kind}: {len(slots)} missed slot(s) since {self.last()[kind]:%Y-%m-%d %H:%M} UTC, "
                      "catching up once", flush=True)
                self.fire(kind)
                ran.append(kind)
            elif kind not in self.last():
                self._remember(kind, now)  # the first start: nothing was missed
        return ran

    def scheduler(self) -> BlockingScheduler:
        """Return the APScheduler with one job per kind: missed fire times coalesced, one instance each."""
        sched = BlockingScheduler(timezone=UTC)
        for kind, trig in self.triggers.items():
            sched.add_job(self.fire, trig, args=[kind], id=kind, name=f"retrain {kind}", coalesce=True,
                          max_instances=1, misfire_grace_time=int(self.grace.total_seconds()))
        return sched


def main(argv: list[str] | None = None) -> int:
    """Catch up, then run the jobs at their times until stopped."""
    p = argparse.ArgumentParser(prog="python -m training.schedule", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--config", help="settings YAML (else $CRYPTOSTREAM_CONFIG)")
    p.add_argument("--once", action="store_true", help="catch up what was missed, then exit")
    a = p.parse_args(argv)
    try:
        schedule = RetrainSchedule(load_settings(a.config))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    schedule.catch_up()
    if a.once:
        return 0
    sched = schedule.scheduler()
    signal.signal(signal.SIGTERM, lambda *_: sched.shutdown(wait=False))
    for job in sched.get_jobs():
        print(f"{job.name}: next at {job.trigger.get_next_fire_time(None, datetime.now(UTC)):%Y-%m-%d %H:%M} UTC",
              flush=True)
    try:
        sched.start()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
