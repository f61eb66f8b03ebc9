"""What processes a run left behind: live members of a process group (zombies awaiting their reaper do not count)."""

from __future__ import annotations

import os

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
