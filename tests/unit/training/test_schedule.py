"""``python -m training.schedule``: overlapping triggers run once; missed slots are caught up once (issue 20, item 3)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest

from flows.settings import SettingsError, load_settings
from inference.promotions import read_events
from tests.kit.repo import PROJECT_ROOT
from training.retrain import Outcome, run_lock, run_once
from training.schedule import RetrainSchedule

NOW = datetime(2024, 1, 5, 10, 0, tzinfo=UTC)  # a Friday


def settings_at(tmp_path, **retrain: str):
    env = {"CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_BARS__TIMEFRAMES": "1h"}
    env.update({f"CRYPTOSTREAM_RETRAIN__{k.upper()}": v for k, v in retrain.items()})
    return load_settings(env=env)


def test_two_triggers_at_once_run_the_job_once_and_log_the_other(tmp_path) -> None:
    settings = settings_at(tmp_path)
    started, runs = threading.Event(), []

    def slow_job() -> Outcome:
        runs.append(time.monotonic())
        started.set()
        time.sleep(0.5)
        return Outcome("slow")

    schedule = RetrainSchedule(settings, run=lambda kind, now: run_once(settings, kind, now, "test", job=slow_job),
                               clock=lambda: NOW)
    results: list[object] = []
    first = threading.Thread(target=lambda: results.append(schedule.fire("daily")))
    first.start()
    assert started.wait(10)
    results.append(schedule.fire("weekly"))  # fires while the daily run holds the lock
    first.join()
    assert len(runs) == 1 and None in results and any(isinstance(r, Outcome) for r in results)
    skipped = read_events(settings.registry_root())
    assert [e.kind for e in skipped] == ["retrain:skipped"] and "holds the lock" in skipped[0].detail["reason"]
    assert "weekly" not in schedule.last() and schedule.last()["daily"] == NOW  # the skipped slot stays missed


def test_the_command_line_run_while_another_holds_the_lock_is_skipped(tmp_path) -> None:
    settings = settings_at(tmp_path)
    env = {"CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_BARS__TIMEFRAMES": "1h", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(PROJECT_ROOT)}
    with run_lock(settings) as taken:  # e.g. the scheduler's run, while cron starts one
        assert taken
        done = subprocess.run([sys.executable, "-m", "training.retrain", "daily"], env=env, cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 3 and "holds the lock, skipped" in done.stderr
    with run_lock(settings) as taken:  # released when its holder ended
        assert taken


def test_missed_slots_are_caught_up_once_not_once_per_slot(tmp_path) -> None:
    settings = settings_at(tmp_path)
    calls: list[tuple[str, datetime]] = []
    schedule = RetrainSchedule(settings, run=lambda kind, now: calls.append((kind, now)) or Outcome(kind),
                               clock=lambda: NOW)
    schedule.state_path.parent.mkdir(parents=True)
    schedule.state_path.write_text(json.dumps({"daily": "2024-01-01T02:30:00+00:00",
                                               "weekly": "2023-12-31T03:30:00+00:00"}))
    assert len(schedule.missed("daily", NOW)) == 4  # Jan 2, 3, 4, 5 at 02:30
    assert schedule.missed("weekly", NOW) == []  # next Sunday is Jan 7
    assert schedule.catch_up() == ["daily"] and calls == [("daily", NOW)]
    assert schedule.catch_up() == [] and len(calls) == 1  # caught up: nothing missed any more


def test_a_slot_missed_longer_ago_than_the_grace_is_not_run(tmp_path) -> None:
    settings = settings_at(tmp_path, misfire_grace_s="3600")
    calls: list[str] = []
    schedule = RetrainSchedule(settings, run=lambda kind, now: calls.append(kind) or Outcome(kind),
                               clock=lambda: NOW)
    schedule.state_path.parent.mkdir(parents=True)
    schedule.state_path.write_text(json.dumps({"daily": "2024-01-01T02:30:00+00:00"}))
    assert schedule.catch_up() == [] and calls == []  # the last slot was 7.5 h ago


def test_the_first_start_runs_nothing_and_the_scheduler_coalesces_one_instance_per_job(tmp_path) -> None:
    settings = settings_at(tmp_path)
    schedule = RetrainSchedule(settings, run=lambda kind, now: pytest.fail("nothing was missed"), clock=lambda: NOW)
    assert schedule.catch_up() == [] and set(schedule.last()) == {"daily", "weekly"}
    sched = schedule.scheduler()
    jobs = {j.id: j for j in sched.get_jobs()}
    assert set(jobs) == {"daily", "weekly"}
    assert all(j.coalesce and j.max_instances == 1 for j in jobs.values())
    assert jobs["weekly"].trigger.get_next_fire_time(None, NOW) == datetime(2024, 1, 7, 3, 30, tzinfo=UTC)


def test_a_bad_crontab_line_names_the_setting(tmp_path) -> None:
    with pytest.raises(SettingsError, match=r"retrain.daily_cron = '61 \* \* \* \*' is not a crontab line"):
        RetrainSchedule(settings_at(tmp_path, daily_cron="61 * * * *"))
