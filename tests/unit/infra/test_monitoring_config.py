"""infra/monitoring: the scrape config and alert rules pass promtool, the rules fire on their test series,
and the rules and the Grafana dashboard name only metrics the flow or the drift job serves."""

from __future__ import annotations

import json
import re
import subprocess

import yaml
from prometheus_client import generate_latest

from flows.monitoring.metrics import FlowMetrics
from tests.kit.prometheus import MONITORING, tool
from training.drift import DriftMetrics

NAME = re.compile(r"\bcryptostream_[a-z_]+")


def served_names() -> set[str]:
    """Every sample name the flow's registry serves (from its ``# TYPE`` lines, with the type's suffixes)."""
    suffixes = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum"),
                "info": ("_info",)}
    out = set()
    text = generate_latest(FlowMetrics().registry) + generate_latest(DriftMetrics().registry)
    for line in text.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            out |= {name + s for s in suffixes.get(kind, ("",))}
    return out


def test_promtool_accepts_the_config_and_the_rules() -> None:
    out = subprocess.run([tool("promtool"), "check", "config", str(MONITORING / "prometheus.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_fires_on_its_test_series_and_only_then() -> None:
    out = subprocess.run([tool("promtool"), "test", "rules", "alerts_test.yml"], cwd=MONITORING,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"][0]["rules"]
    tests = (MONITORING / "alerts_test.yml").read_text()
    for rule in rules:
        if rule["alert"] not in ("CryptostreamFlowDown", "CryptostreamSlowSink"):
            assert f"alertname: {rule['alert']}" in tests, f"{rule['alert']} has no promtool test"


def test_rules_and_dashboard_name_only_served_metrics() -> None:
    served = served_names()
    rules = (MONITORING / "alerts.yml").read_text()
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = set(NAME.findall(rules)) | {n for e in exprs for n in NAME.findall(e)}
    assert len(used) > 15
    assert used <= served, f"not served by flows/monitoring/metrics.py or training/drift.py: {sorted(used - served)}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
