"""Run ``flows.live`` as a process and SIGKILL it at chosen shares of a replay, then let it finish."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kit.repo import PROJECT_ROOT


def run_flow(env: dict[str, str], *args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    cmd = [*prefix, sys.executable, "-m", "bytewax.run", "flows.live", *args]
    return subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _recovery_args(recovery: Path) -> tuple[str, ...]:
    return ("-r", str(recovery), "-s", "1", "-b", "30")


def _wait_for_share(ex, share: float) -> None:
    """Wait until the replay has handed out ``share`` of its trades (at most 120 s), then a little more
    so that some of it flows through and a snapshot or two are taken."""
    total = len(ex.data.timeline)
    deadline = time.monotonic() + 120
    while ex.engine.cursor < total * share and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)


def _finish(procs: list[subprocess.Popen]) -> None:
    """Let every process reach the end of the replay; each must exit 0."""
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]


def kill_at_and_finish(ex, env: dict[str, str], recovery: Path, shares: tuple[float, ...]) -> None:
    """Run ``flows.live`` with recovery, SIGKILL it once the replay has handed out each share of its
    trades, restart it each time, then let the last run reach the end (exit 0)."""
    args = _recovery_args(recovery)
    for share in shares:
        proc = run_flow(env, *args)
        _wait_for_share(ex, share)
        if proc.poll() is not None:
            pytest.fail("the flow ended before it could be killed: " + proc.stderr.read().decode()[-3000:])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert ex.engine.cursor < len(ex.data.timeline), "kill landed after the replay ended"
    _finish([run_flow(env, *args)])


def kill_one_of_cluster_and_finish(ex, env: dict[str, str], recovery: Path, ips: list[str], netns: list[str],
                                   share: float) -> int:
    """Run ``flows.live`` as a cluster, process ``i`` in network namespace ``netns[i]`` at ``ips[i]``,
    with recovery; SIGKILL the last process once the replay has handed out ``share`` of its trades,
    stop the rest (a cluster without a peer cannot go on), restart the whole cluster from the
    snapshots and let it reach the end (exit 0).  Return the killed process's return code."""
    args = _recovery_args(recovery)

    def start(port: int) -> list[subprocess.Popen]:
        addresses = ";".join(f"{ip}:{port + i}" for i, ip in enumerate(ips))
        return [run_flow(env, "-a", addresses, "-i", str(i), *args, prefix=("ip", "netns", "exec", ns))
                for i, ns in enumerate(netns)]

    procs = start(23621)
    _wait_for_share(ex, share)
    for p in procs:
        if p.poll() is not None:
            pytest.fail("a cluster process ended before the kill: " + p.stderr.read().decode()[-3000:])
    procs[-1].send_signal(signal.SIGKILL)
    killed = procs[-1].wait()
    assert ex.engine.cursor < len(ex.data.timeline), "kill landed after the replay ended"
    for p in procs[:-1]:  # a survivor does not stop by itself (still up 5 s later in a trial): stop it
        p.send_signal(signal.SIGKILL)
        p.wait()
    _finish(start(23631))
    return killed
