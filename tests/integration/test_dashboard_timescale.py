"""The dashboard in a real browser on the ``timescale`` profile: SQL reads, Redis-stream live update, Redis kill switch.

A scratch TimescaleDB database filled through the profile's writers (and its rows
published to the Redis streams, as the live flow's decision sink does); headless Debian
Chromium loads the pages, sees a new record arrive through the streams, and engages the
kill switch, whose Redis key then holds the reason.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import orjson

from flows.settings import load_settings
from flows.stores import open_stores
from tests.kit.dashboard_browser import browser, free_port, open_page, see, serve, wait_engaged
from tests.kit.dashboard_store import fill_store

SYMBOLS = ("BTC/USDT", "ETH/USDT")
BARS = 600


def test_pages_read_timescale_update_from_redis_streams_and_the_kill_switch_is_the_redis_key(
        migrated_dsn: str, redis_url: str, tmp_path: object) -> None:
    run = f"dash-{uuid.uuid4().hex[:8]}"
    env = {"CRYPTOSTREAM_PROFILE": "timescale", "TIMESCALE_DSN": migrated_dsn, "REDIS_URL": redis_url,
           "CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
           "CRYPTOSTREAM_DASHBOARD__REFRESH_S": "1",
           "CRYPTOSTREAM_RISK__KILL_SWITCH__REDIS_KEY": f"test:dashboard:kill:{run}"}
    settings = load_settings(env=env)
    stores = open_stores(settings)
    fill_store(stores, SYMBOLS, BARS, run_id=run, decide_every=5, events=True)
    latest = stores.monitor_reader().latest_state(run)
    assert latest is not None
    kill = stores.kill_switch()
    try:
        with serve(env, free_port()) as url, browser() as page:
            open_page(page, url, "Portfolio")
            page.get_by_text(f"{latest['equity']:,.2f}", exact=True).wait_for()
            see(page, "ETH/USDT")

            # a record written and published as the flow's decision sink does reaches the open page
            equity = round(latest["equity"] - 7.89, 2)
            row = (latest["ts"].to_pydatetime() + timedelta(minutes=1), run, equity, equity, 0.0, 0.0, 0.0, 0.0,
                   0.0, 0.0, orjson.dumps({}), 0.0, orjson.dumps({"prices": {}, "qty": {}}))
            stores.decision_writer().write({"portfolio_state": [row]})
            bus = stores.event_bus()
            assert bus is not None
            bus.publish({"portfolio_state": bus.encode("portfolio_state", [row])})
            bus.close()
            page.get_by_text(f"{equity:,.2f}", exact=True).wait_for(timeout=15_000)
            see(page, "live · Redis streams")

            open_page(page, f"{url}/orders", "Orders and fills")
            page.get_by_text("2.00 bp").first.wait_for()  # fills 2 bp worse than the decision close, via SQL
            # the other pages' reads equal the parquet ones: tests/integration/test_monitor_readers_timescale.py

            assert not kill.status().active
            open_page(page, f"{url}/kill-switch", "Kill switch")
            see(page, f"redis key test:dashboard:kill:{run}")
            page.get_by_label("Reason").fill("timescale dashboard test")
            page.get_by_text("I confirm: engage the kill switch").click()
            page.get_by_role("button", name="Engage kill switch").click()
            wait_engaged(page)
            status = kill.status()
            assert status.active and status.reason == "timescale dashboard test"
    finally:
        kill.release()
