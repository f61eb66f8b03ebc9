"""flows.exchange.replay_process: the replay exchange started through its command line, as the main job does."""

from __future__ import annotations

import json
import urllib.request

import pytest

from flows.exchange.binance import make_binance
from flows.exchange.replay_process import control, replay_process, speed_arg


def test_speed_arg_is_what_the_cli_reads() -> None:
    assert speed_arg(0) == "max"
    assert speed_arg(120) == "120.0"
    assert speed_arg(0.5) == "0.5"


def test_urls_are_read_from_its_output_and_the_clock_is_steered_over_http() -> None:
    args = ["--synthetic", "BTC/USDT", "--seed", "3", "--speed", "max", "--rest-horizon", "all",
            "--start", "2024-01-01T00:00:00Z", "--end", "2024-01-01T01:00:00Z", "--rate", "0.5"]
    with replay_process(args) as ex:
        assert ex.http_url.startswith("http://127.0.0.1:") and ex.ws_url == "ws" + ex.http_url[4:]
        status = control(ex.http_url, "seek", time=1_704_070_800_000)
        assert status["description"] and status["clock_ms"] >= 1_704_070_740_000  # in the last minute
        with urllib.request.urlopen(f"{ex.http_url}/replay/status", timeout=10) as reply:
            assert json.loads(reply.read())["rest_horizon"] == "all"
        bars = make_binance(ex.http_url, enableRateLimit=False).fetch_ohlcv("BTC/USDT", "1m", limit=1000)
        assert len(bars) == 60


def test_a_replay_that_cannot_start_says_why() -> None:
    with pytest.raises(SystemExit, match="does not exist"), replay_process(["--data", "/nonexistent/data"]):
        pass
