"""A real Prometheus server (Debian's ``prometheus`` package, installed by infra/setup) for tests."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.kit.processes import answers_ok
from tests.kit.repo import PROJECT_ROOT

MONITORING = PROJECT_ROOT / "infra" / "monitoring"


def tool(name: str) -> str:
    """Return the path of ``prometheus`` or ``promtool``; fail (never skip) naming the fix when absent."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
    assert path, f"{name} is not installed: run infra/setup (as root it installs Debian's prometheus package)"
    return path


def free_port() -> int:
    """Return a loopback port free at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """Return every sample of ``127.0.0.1:<port>/metrics`` as ``name{label=value,...}`` -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    """Return the sum of ``name``'s samples (from :func:`scrape`) that carry these label values."""
    want = [f"{k}={v}" for k, v in labels.items()]
    return sum(v for k, v in samples.items() if k.split("{")[0] == name and all(w in k for w in want))


class Prometheus:
    """A running server's HTTP API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        """Return the ``data`` of an API call (``/api/v1/...``)."""
        q = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{q}", timeout=5) as r:
            doc = json.loads(r.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Return the instant vector of ``expr``."""
        return self.get("/api/v1/query", query=expr)["result"]

    def firing(self) -> set[str]:
        """Return the names of the alerts firing now."""
        return {a["labels"]["alertname"] for a in self.get("/api/v1/alerts")["alerts"] if a["state"] == "firing"}


@contextlib.contextmanager
def running_prometheus(workdir: Path, config: str, rules: str | None = None) -> Iterator[Prometheus]:
    """Run ``prometheus`` on a free loopback port with ``config`` (and ``rules`` as alerts.yml) in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(config)
    if rules is not None:
        (workdir / "alerts.yml").write_text(rules)
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen([tool("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        if not answers_ok(f"{server.url}/-/ready", proc, 30):
            assert proc.poll() is None, f"prometheus exited: {(workdir / 'prometheus.log').read_text()[-2000:]}"
            raise AssertionError("prometheus not ready within 30 s")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
