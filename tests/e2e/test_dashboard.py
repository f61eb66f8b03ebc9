"""The dashboard in a real browser on the ``local`` profile: every page, the live update, the kill switch.

``python -m flows.monitoring.dashboard`` serves a parquet store filled through the profile's
writers (tests/kit/dashboard_store.py), a registry with a gate verdict and two report files;
headless Debian Chromium (Playwright) loads each page and checks what it shows against the
store.  Screenshots go to a temporary directory (``DASHBOARD_SCREENSHOTS=DIR`` keeps them;
``docs/img/dashboard.png`` of the README is the portfolio page from that run).  The Drift page shows
the report of a real ``training.drift`` check over a store with a known shift.
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from flows.settings import load_settings
from flows.stores import open_stores
from inference.verdict import write_verdict
from tests.kit.dashboard_browser import (
    browser,
    free_port,
    open_page,
    screenshot,
    see,
    serve,
    settle,
    wait_engaged,
)
from tests.kit.dashboard_store import START, fill_store
from tests.kit.drift import fill as fill_drift
from tests.kit.drift import register
from tests.kit.verdicts import deployment, verdict
from training.drift import DriftMetrics, run_check

BARS = 1500  # per symbol: 25 hours of 1m bars
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


@pytest.fixture
def store(tmp_path: Path) -> dict[str, str]:
    """Fill a local store, a registry with a verdict and a reports directory; return the dashboard's env."""
    env = {"CRYPTOSTREAM_PROFILE": "local", "CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"),
           "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS), "CRYPTOSTREAM_DASHBOARD__REFRESH_S": "1",
           "CRYPTOSTREAM_DASHBOARD__REPORT_DIRS": str(tmp_path / "reports")}
    settings = load_settings(env=env)
    fill_store(open_stores(settings), SYMBOLS, BARS, decide_every=5)
    versions = deployment(settings.registry_root())
    write_verdict([settings.registry_root() / "ensemble" / versions["ensemble"]], verdict(versions, "legacy", "c" * 64))
    reports = tmp_path / "reports" / "wf-2024"
    reports.mkdir(parents=True)
    (reports / "REPORT.md").write_text("# Walk-forward 2024\n\nOut-of-sample Sharpe **0.42** over 4 windows.\n")
    (reports / "tearsheet.html").write_text("<html><body><h1>Tearsheet 2024</h1><p>CAGR 12.3%</p></body></html>")
    return env


def test_every_page_shows_the_store_and_the_kill_switch_engages_through_the_store(store: dict[str, str],
                                                                                 tmp_path: Path) -> None:
    settings = load_settings(env=store)
    stores = open_stores(settings)
    reader = stores.monitor_reader()
    latest = reader.latest_state("dash-run")
    assert latest is not None
    shots = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path / "shots")
    with serve(store, free_port()) as url, browser() as page:
        # Portfolio: the latest equity, the per-symbol P&L table, charts drawn
        open_page(page, url, "Portfolio")
        page.get_by_text(f"{latest['equity']:,.2f}", exact=True).wait_for()
        for title in ("Equity", "Drawdown", "Exposure", "P&L by day", "P&L by symbol"):
            assert page.get_by_role("heading", name=title, exact=True).count() == 1, title
        assert page.locator("[data-testid='stVegaLiteChart'], canvas, svg.marks").count() >= 4
        see(page, "ETH/USDT")

        # Live: a new portfolio row reaches the open page without a reload (the poll of the parquet store)
        equity = round(latest["equity"] + 12.34, 2)
        row = (latest["ts"].to_pydatetime() + timedelta(minutes=1), "dash-run", equity, equity, 0.0, 0.0, 0.0,
               0.0, 0.0, 0.0, orjson.dumps({}), 0.0, orjson.dumps({"prices": {}, "qty": {}}))
        stores.decision_writer().write({"portfolio_state": [row]})
        page.get_by_text(f"{equity:,.2f}", exact=True).wait_for(timeout=15_000)
        # after the live check: a screenshot stops the page's timers (the fragment's poll) in headless Chromium
        screenshot(page, shots, "portfolio", full_page=False)  # the README's picture
        screenshot(page, shots, "portfolio-full")

        open_page(page, f"{url}/positions", "Positions")
        assert page.get_by_text("Flat: no open position.").count() == 1  # the new row holds no position

        open_page(page, f"{url}/orders", "Orders and fills")
        page.get_by_text("2.00 bp").first.wait_for()  # the kit fills 2 bp worse than the decision close
        see(page, "cs-BTCUSDT-")
        screenshot(page, shots, "orders")

        open_page(page, f"{url}/predictions", "Predictions")
        for model in ("ensemble", "lightgbm", "lstm", "gnn"):
            see(page, model, exact=True)
        screenshot(page, shots, "predictions")

        open_page(page, f"{url}/freshness", "Feature freshness")
        for group in ("bars", "bar_features", "cross_asset_features"):
            see(page, group, exact=True)
        last_bar = (START + timedelta(minutes=BARS - 1)).strftime("%Y-%m-%d %H:%M:%S")
        see(page, last_bar)

        open_page(page, f"{url}/risk", "Risk")
        for text in ("drawdown", "gross leverage", "Circuit breakers", "Halts, probations and releases",
                     "Rejections and cuts", "max_drawdown:halt"):
            see(page, text, exact=True)
        screenshot(page, shots, "risk")

        open_page(page, f"{url}/models", "Models and gate verdicts")
        see(page, "PASS (legacy)")
        page.get_by_text("ensemble/", exact=False).first.click()
        see(page, "sharpe", exact=True)

        open_page(page, f"{url}/reports", "Reports")
        page.frame_locator("iframe").get_by_text("CAGR 12.3%").wait_for()  # the newest report: the HTML one
        page.get_by_test_id("stSelectbox").last.click()
        page.get_by_role("option", name="reports/wf-2024/REPORT.md").click()
        page.get_by_role("heading", name="Walk-forward 2024").wait_for()
        screenshot(page, shots, "reports")

        # Kill switch: refused without the confirmation, engaged with reason and confirmation
        kill = stores.kill_switch()
        assert not kill.status().active
        open_page(page, f"{url}/kill-switch", "Kill switch")
        page.get_by_label("Reason").fill("dashboard test: exchange incident")
        page.get_by_role("button", name="Engage kill switch").click()
        page.get_by_text("Tick the confirmation box.").wait_for()
        assert not kill.status().active
        page.get_by_label("Reason").fill("dashboard test: exchange incident")
        page.get_by_text("I confirm: engage the kill switch").click()
        page.get_by_role("button", name="Engage kill switch").click()
        wait_engaged(page)
        settle(page)
        status = kill.status()
        assert status.active and status.reason == "dashboard test: exchange incident"
        screenshot(page, shots, "kill-switch")

        page.get_by_label("Reason").fill("incident over")
        page.get_by_text("I confirm: release the kill switch").click()
        page.get_by_role("button", name="Release kill switch").click()
        page.get_by_text("Released: the flow trades normally.").wait_for()
        assert not kill.status().active
    if os.environ.get("DASHBOARD_SCREENSHOTS") is None:
        shutil.rmtree(shots, ignore_errors=True)


def test_the_drift_page_shows_the_last_check_and_its_alerts(tmp_path: Path) -> None:
    env = {"CRYPTOSTREAM_PROFILE": "local", "CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"),
           "CRYPTOSTREAM_SYMBOLS": "BTC/USDT,ETH/USDT", "CRYPTOSTREAM_DASHBOARD__REFRESH_S": "1"}
    settings = load_settings(env=env)
    with serve(env, free_port()) as url, browser() as page:
        open_page(page, f"{url}/drift", "Drift")
        see(page, "No drift check yet")
        register(settings)
        fill_drift(settings, shift=2.0, prob=0.9)
        report = run_check(settings, DriftMetrics())
        open_page(page, f"{url}/drift", "Drift")
        psi = next(r["psi"] for r in report["features"] if (r["symbol"], r["feature"]) == ("BTC/USDT", "ret_1"))
        see(page, f"feature drift: BTC/USDT ret_1 PSI {psi:.3f} > 0.25")
        see(page, f"ECE {report['calibration']['ece']:.3f}")
        see(page, "Feature drift: PSI against the training window (alert above 0.25)")
        screenshot(page, Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path / "shots"), "drift")
