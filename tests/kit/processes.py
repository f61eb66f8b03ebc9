"""What processes a run left behind: live members of a process group (zombies awaiting their reaper do not count)."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from typing import Any

import psutil


def live_in_group(pgid: int) -> list[psutil.Process]:
    """Return the processes of group ``pgid`` that still run (not zombies)."""
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return out


def still_running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Return those of ``procs`` that still run (``is_running`` also rules out a reused pid)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def answers_ok(url: str, proc: subprocess.Popen[Any], timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll ``url`` until it answers 200: True then; False once ``proc`` exited or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
