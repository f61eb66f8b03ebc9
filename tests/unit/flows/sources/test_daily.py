"""Daily providers: files, the HTTP APIs (through the provider replay) and funding through ccxt (replay exchange).

The HTTP and ccxt paths run the production clients unchanged against local servers that answer
in the providers' formats, including their error replies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.errors import ProviderError
from flows.sources.daily import FileSource, HttpSource, make_usdm, parse_chart, parse_fear_greed
from infra.replay_exchange import running_replay
from infra.replay_providers import running_providers
from infra.replay_providers.server import RECORDED, set_error
from tests.kit.daily_data import write_daily_files

T0, T1 = pd.Timestamp("2022-11-01", tz="UTC"), pd.Timestamp("2023-01-01", tz="UTC")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_daily_files(tmp_path_factory.mktemp("daily"))


def test_files_give_one_row_per_day_with_the_raw_columns(folder: Path) -> None:
    df = FileSource(folder).raw("funding", T0, T1)
    assert list(df.columns) == ["date", "funding_mean", "funding_abs"]
    assert len(df) == 61 and df["date"].iloc[0] == T0 and df["date"].is_monotonic_increasing


def test_a_bad_file_value_names_the_field_and_day(tmp_path: Path) -> None:
    d = write_daily_files(tmp_path / "d", days=40)
    csv = pd.read_csv(d / "hashrate.csv").astype({"hashrate": object})
    csv.loc[5, "hashrate"] = "n/a"
    csv.to_csv(d / "hashrate.csv", index=False)
    with pytest.raises(ProviderError, match=r"field hashrate of 2022-10-06 is not a number"):
        FileSource(d).raw("hash_rate")


def test_http_providers_give_the_same_values_as_the_files(folder: Path) -> None:
    files = FileSource(folder)
    with running_providers(folder) as rp:
        http = HttpSource(fear_greed_url=f"{rp.http_url}/fng/", chart_url=f"{rp.http_url}/charts")
        for g in ("fear_greed", "hash_rate", "difficulty"):
            pd.testing.assert_frame_equal(http.raw(g, T0, T1), files.raw(g, T0, T1), rtol=1e-12)
        assert any(r.startswith("/fng/?limit=0&format=json") for r in rp.requests)
        assert any(r.startswith("/charts/hash-rate?timespan=all") for r in rp.requests)


def test_provider_error_replies_become_errors_naming_the_provider(folder: Path) -> None:
    with running_providers(folder) as rp:
        http = HttpSource(fear_greed_url=f"{rp.http_url}/fng/", chart_url=f"{rp.http_url}/charts")
        set_error(rp.http_url, "/fng/", "fng_error")  # HTTP 200 with metadata.error
        with pytest.raises(ProviderError, match="provider error: Limit must be an integer"):
            http.raw("fear_greed")
        set_error(rp.http_url, "/charts/difficulty", "chart_not_found", status=404)
        with pytest.raises(ProviderError, match=r"charts/difficulty: HTTP 404: .*Chart not found"):
            http.raw("difficulty")
        set_error(rp.http_url, "/charts/hash-rate", "rate_limited", status=429)
        with pytest.raises(ProviderError, match="HTTP 429: Too Many Requests"):
            http.raw("hash_rate")
        assert len(http.raw("hash_rate")) == 200  # service resumes after the error


def test_recorded_payloads_parse_and_malformed_ones_name_the_field() -> None:
    import json

    fng = parse_fear_greed(json.loads((RECORDED / "fng_ok_head.json").read_text()))
    assert fng["fng"].tolist() == [65.0, 64.0] and str(fng["date"].iloc[-1].date()) == "2024-12-31"
    hr = parse_chart(json.loads((RECORDED / "chart_ok_head.json").read_text()), "hash_rate")
    assert hr["hashrate"].iloc[-1] == pytest.approx(703991258.629332)
    with pytest.raises(ProviderError, match=r"data\[0\]\.timestamp is missing"):
        parse_fear_greed({"data": [{"value": "3"}], "metadata": {"error": None}})
    with pytest.raises(ProviderError, match=r"values\[1\]\.x is not a number"):
        parse_chart({"status": "ok", "values": [{"x": 1, "y": 2}, {"x": "soon", "y": 2}]}, "difficulty")
    with pytest.raises(ProviderError, match="field values is missing"):
        parse_chart({"status": "ok"}, "difficulty")


def test_funding_through_ccxt_binanceusdm_on_the_replay_exchange(folder: Path) -> None:
    with running_replay(synthetic=("BTC/USDT",), funding=folder / "funding_rates.csv") as ex:
        http = HttpSource(usdm=make_usdm(ex.http_url))
        got = http.raw("funding", T0, T1)  # 61 days x 3 settlements: paged through 1000-row pages
        want = FileSource(folder).raw("funding", T0, T1)
        assert got["date"].tolist() == want["date"].tolist()
        np.testing.assert_allclose(got["funding_mean"], want["funding_mean"], atol=1e-8)
        page = make_usdm(ex.http_url).fetch_funding_rate_history("BTC/USDT:USDT", since=int(T0.value // 10**6),
                                                                 limit=4)
        assert [p["timestamp"] - page[0]["timestamp"] for p in page] == [0, 8 * 3600_000, 16 * 3600_000,
                                                                        24 * 3600_000]
        from urllib.error import HTTPError
        from urllib.request import urlopen

        with pytest.raises(HTTPError) as err:  # Binance's own error reply for a symbol without funding
            urlopen(f"{ex.http_url}/fapi/v1/fundingRate?symbol=ETHUSDT", timeout=10)  # noqa: S310
        assert err.value.code == 400 and b'"code":-1121' in err.value.read()
