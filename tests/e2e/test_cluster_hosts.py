"""The live flow as a Bytewax cluster across network-namespace hosts gives one process's bars (issue 21).

Runs ``tests/bench/bench_scale.py --sections 3`` in its bounded form: 10 symbols of the synthetic
universe, 20,000 trades, one process and then two processes each in its own namespace
(``infra/netns/hosts up 2``: veths on a bridge, 10.210.0.11 and .12), connected by Bytewax's own
addresses and process ids.  Needs root for ``ip netns`` (CI runs as root).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="network namespaces need root and iproute2 (ip)")


def test_cluster_across_namespace_hosts_gives_the_bars_of_one_process(tmp_path: Path) -> None:
    out = tmp_path / "hosts.json"
    try:
        subprocess.run([sys.executable, str(ROOT / "tests" / "bench" / "bench_scale.py"), "--sections", "3",
                        "--symbol-counts", "10", "--workers", "1,2", "--trades", "20000", "--json", str(out)],
                       check=True, timeout=600, cwd=ROOT, capture_output=True)
    finally:
        subprocess.run([str(ROOT / "infra" / "netns" / "hosts"), "down"], check=False)
    one, two = json.loads(out.read_text())["hosts"]
    assert (one["workers"], one["hosts"], two["workers"], two["hosts"]) == (1, False, 2, True)
    assert one["closed"] > 15_000  # most of the 20,000 trades ended in closed bars
    assert (two["closed"], two["digest"]) == (one["closed"], one["digest"])
