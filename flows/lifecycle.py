"""A clean stop on Ctrl-C or SIGTERM, the run's tally and summary, and the main job's child processes.

The flow (``python -m bytewax.run flows.live``) installs :func:`install_stop_handlers`:
the first SIGINT or SIGTERM only sets :data:`STOP`.  The exchange source then ends its
partitions (``StopIteration``), the decision step places no new order, Bytewax works what
is in flight, the sinks write it and close (flush), a recovery snapshot is taken at the
final epoch when the run has a recovery directory, and the process prints its summary and
exits 0.  A second signal forces the stop (exit 130).

The main job runs its children (the replay exchange, the flow) each in a process group of
its own (:func:`child_group_kwargs`): a Ctrl-C at the terminal reaches the main job only,
which forwards it to the flow, waits for the flow's clean stop, then ends the replay
exchange's group; nothing is left behind (:func:`end_group`).

Exit codes (README, "Command line"): :data:`EXIT_OK` 0 = finished (duration reached,
stream ended, or stopped by SIGINT/SIGTERM), 1 = failed, :data:`EXIT_USAGE` 2 = bad settings
or command line, :data:`EXIT_FORCED` 130 = interrupted before the flow ran, or forced by a
second signal.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FORCED = 0, 1, 2, 130
EMPTY_RUN_WARNING = ("the stream ended and this run stored nothing (no bar closed): the exchange sent no trade, "
                     "or a restart had no position to resume from (see README, 'Recovery')")
STOP = threading.Event()
_reason: list[str] = []


def stop_requested() -> bool:
    """Return True once a stop was asked for (a signal, or :func:`request_stop`)."""
    return STOP.is_set()


def stop_reason() -> str | None:
    """Return what asked for the stop (``"SIGTERM"``, ...), or None while running."""
    return _reason[0] if _reason else None


def request_stop(reason: str) -> None:
    """Ask the flow to stop: its sources end, no new order is placed, the sinks flush."""
    if not STOP.is_set():
        _reason.append(reason)
        STOP.set()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if STOP.is_set():
        print(f"{name} again: forcing the stop (exit {EXIT_FORCED}); sinks may not be flushed", file=sys.stderr,
              flush=True)
        os._exit(EXIT_FORCED)
    request_stop(name)
    print(f"{name}: stopping; no new orders, flushing the sinks (send it again to force)", file=sys.stderr,
          flush=True)


def install_stop_handlers() -> None:
    """Make SIGINT and SIGTERM ask for a clean stop (the first) or force it (the second)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)


class Tally:
    """What this process's flow did, counted by its printing sinks (all workers of the process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bars: Counter[str] = Counter()
        self.closes = 0
        self.last_status: str | None = None
        self.started = time.monotonic()

    def bar(self, symbol: str) -> None:
        """Count a closed bar of ``symbol``."""
        with self._lock:
            self.bars[symbol] += 1

    def status(self, text: str) -> None:
        """Count a decided bar close and keep its status line."""
        with self._lock:
            self.closes += 1
            self.last_status = text

    def as_dict(self) -> dict[str, Any]:
        """Return the tally as plain data, with the stop reason and the seconds run."""
        with self._lock:
            return {"bars": dict(self.bars), "closes": self.closes, "last_status": self.last_status,
                    "stopped_by": stop_reason() or "end of stream or duration",
                    "seconds": round(time.monotonic() - self.started, 1)}


TALLY = Tally()


def summary_path(data_dir: Path) -> Path:
    """Return where the flow writes its summary at exit (the main job reads it)."""
    return data_dir / "flow_summary.json"


def write_summary(data_dir: Path, symbols: tuple[str, ...], extra: dict[str, Any]) -> dict[str, Any]:
    """Print the flow's summary and write it as JSON to :func:`summary_path`; return it."""
    doc = {**TALLY.as_dict(), **extra}
    bars = " ".join(f"{s}={doc['bars'].get(s, 0)}" for s in symbols)
    if not any(doc["bars"].values()) and stop_reason() is None:
        # a finite stream (a replay, exchange.idle_stop_s, duration_s) ended and this run stored no bar
        doc["warning"] = EMPTY_RUN_WARNING
        log.warning(EMPTY_RUN_WARNING)
        print(f"WARNING: {EMPTY_RUN_WARNING}", file=sys.stderr, flush=True)
    print(f"flows.live summary ({doc['seconds']:.0f} s, stopped by {doc['stopped_by']}):\n"
          f"  closed bars: {bars}\n  bar closes decided: {doc['closes']}\n"
          f"  last status: {doc['last_status'] or 'none'}\n"
          + "".join(f"  {k}: {v}\n" for k, v in extra.items())
          + (f"  WARNING: {doc['warning']}\n" if "warning" in doc else ""), end="", flush=True)
    path = summary_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return doc


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: a SIGKILLed parent too
    except (OSError, AttributeError):
        pass


def child_group_kwargs() -> dict[str, Any]:
    """Return ``Popen`` arguments that start a child in a process group of its own, ended with its parent.

    Terminal signals (Ctrl-C) then reach the parent only, which decides how each child stops.
    """
    kwargs: dict[str, Any] = {"process_group": 0}
    if sys.platform.startswith("linux"):
        kwargs["preexec_fn"] = _die_with_parent
    return kwargs


def end_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, grace_s: float = 15.0) -> int:
    """Send ``sig`` to ``proc``'s process group, wait ``grace_s``, then SIGKILL what is left; return its code."""
    for s, wait in ((sig, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, s)
        except ProcessLookupError:
            pass  # the group is empty: everything in it has ended
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not end %.0f s after %s", proc.pid, wait, signal.Signals(s).name)
            continue
        if s != signal.SIGKILL:  # the leader ended; anything it started is killed with the group
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        break
    _wait_group_empty(proc.pid, 10.0)
    return proc.returncode


def _wait_group_empty(pgid: int, timeout_s: float) -> None:
    """Wait (bounded) until no process of group ``pgid`` is left: a SIGKILL is delivered, not yet acted on."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
