"""A real Prometheus server scrapes ``python -m bytewax.run flows.live`` and evaluates the shipped alert rules.

The flow reads a synthetic market from the replay exchange (600x real time: ten 1m
bars a second, features from the first bar: the flow warms up on the klines of the
market's history before the stream, ``exchange.warmup_klines``), which corrupts 5 % of
the messages; Prometheus (Debian's package, installed by infra/setup) scrapes
every second with infra/monitoring/alerts.yml, its ``for`` durations set to 0 so a
rule fires at its first true evaluation.  The dead-letter rule must fire, the
no-bars rule must not, and the series of every ingest stage must be there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import yaml

from infra.replay_exchange.faults import FaultConfig
from infra.replay_exchange.server import running_replay
from tests.kit.prometheus import MONITORING, free_port, running_prometheus
from tests.kit.replay import synthetic_with_history
from tests.kit.repo import PROJECT_ROOT, copy_feature_repo

SYMBOLS = ("BTC/USDT", "ETH/USDT")


def test_prometheus_scrapes_the_flow_and_the_dead_letter_rule_fires(tmp_path) -> None:
    repo = copy_feature_repo(tmp_path)  # unregistered: the flow registers the Feast views itself
    metrics_port = free_port()
    env = {"CRYPTOSTREAM_PROFILE": "local", "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
           "CRYPTOSTREAM_FEAST_REPO": str(repo), "CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"),
           "CRYPTOSTREAM_DURATION_S": "60", "CRYPTOSTREAM_MONITORING__METRICS_PORT": str(metrics_port)}
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    for rule in rules["groups"][0]["rules"]:
        rule["for"] = "0s"  # fire at the first true evaluation (the shipped rules wait minutes)
    config = (f"global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [alerts.yml]\n"
              f"scrape_configs:\n  - job_name: cryptostream-flow\n"
              f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n")
    faults = FaultConfig(corrupt=0.05, corrupt_kinds=("malformed_json", "nan_price"))
    with running_replay(None, speed=600, synthetic=SYMBOLS, seed=3, synthetic_rate=5.0, faults=faults,
                        wait_for_streams=len(SYMBOLS), **synthetic_with_history(6 * 3600)) as ex, \
            running_prometheus(tmp_path / "prometheus", config, yaml.safe_dump(rules)) as prom:
        env.update({"CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url, "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url,
                    "CRYPTOSTREAM_EXCHANGE__API_KEY": "replay-exchange"})
        flow = subprocess.Popen([sys.executable, "-m", "bytewax.run", "flows.live"], cwd=PROJECT_ROOT,
                                env={**os.environ, **env, "PYTHONPATH": str(PROJECT_ROOT)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            deadline, seen = time.monotonic() + 90, set()
            while time.monotonic() < deadline and flow.poll() is None:
                firing = prom.firing()
                rows = prom.query("sum(cryptostream_feature_rows_total)")  # features: from the first bar (kline warm-up)
                if "CryptostreamDeadLetterRate" in firing and rows and float(rows[0]["value"][1]) > 0 \
                        and "CryptostreamNoBars" not in firing:
                    seen = firing
                    break
                time.sleep(1)
            series = {name: prom.query(f"sum({name})") for name in (
                "cryptostream_messages_total", "cryptostream_trades_total", "cryptostream_bars_total",
                "cryptostream_feature_rows_total", "cryptostream_dead_letters_total",
                "cryptostream_stage_seconds_count", "cryptostream_sink_seconds_count", "cryptostream_drawdown_limit")}
            reasons = {r["metric"]["reason"] for r in prom.query("cryptostream_dead_letters_total")}
            health = {r["name"]: r["health"] for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]}
            targets = prom.get("/api/v1/targets")["activeTargets"]
        finally:
            flow.terminate()
            try:
                _, err = flow.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                flow.kill()
                _, err = flow.communicate()
    assert seen, f"the dead-letter rule did not fire with bars and features flowing; flow stderr: {err[-3000:]}"
    assert targets and all(t["health"] == "up" for t in targets), targets
    assert set(health.values()) == {"ok"} and len(health) >= 8, health
    for name, result in series.items():
        assert result and float(result[0]["value"][1]) > 0, f"{name} missing: {result}"
    assert {"malformed json", "bad price"} <= reasons, reasons
