"""The trading universe: a pairlist from the replay exchange's synthetic universe through ccxt."""

from __future__ import annotations

import numpy as np
import pytest

from flows.exchange.binance import make_binance
from flows.exchange.universe import UniverseConfig, pairlist, with_universe
from flows.settings import SettingsError, load_settings
from infra.replay_exchange import running_replay
from infra.replay_exchange.config import ReplayConfig, load_data
from infra.replay_exchange.synthetic import universe


def test_universe_names_quotes_and_volumes_are_seeded() -> None:
    symbols, scale = universe(250, seed=7)
    assert symbols[:2] == ("BTC/USDT", "ETH/USDT") and "S250/USDT" in symbols
    assert sum(s.endswith("/USDT") for s in symbols) == 250
    assert {s.split("/")[1] for s in symbols} == {"USDT", "BTC", "USDC"}
    assert len(set(symbols)) == len(symbols) == len(scale)
    assert universe(250, seed=7) == (symbols, scale) and universe(250, seed=8)[1] != scale
    assert max(scale) / min(scale) > 100  # volumes spread as on an exchange
    with pytest.raises(ValueError, match="universe size"):
        universe(0, seed=7)


def test_universe_clusters_make_peers_more_correlated_than_strangers() -> None:
    data = load_data(ReplayConfig(universe=40, synthetic_duration_s=3600, seed=3))
    usdt = [s for s in data.tapes if s.endswith("USDT")][:40]
    closes = []
    for market_id in usdt:
        tape = data.tapes[market_id]
        minute = (tape.ts - tape.ts[0]) // 60_000
        last = np.searchsorted(minute, np.arange(60), "right") - 1
        closes.append(np.log(tape.price[np.maximum(last, 0)]))
    corr = np.corrcoef(np.diff(np.array(closes), axis=1))
    k = 4  # load_data's default: one cluster per 10 markets
    same = np.array([[i % k == j % k and i != j for j in range(40)] for i in range(40)])
    other = np.array([[i % k != j % k for j in range(40)] for i in range(40)])
    assert corr[same].mean() > corr[other].mean() + 0.1


def test_pairlist_takes_the_most_traded_markets_of_one_quote() -> None:
    with running_replay(universe=250, synthetic_duration_s=600, seed=7, rest_horizon="all") as ex:
        client = make_binance(ex.http_url)
        got = pairlist(client, UniverseConfig(source="pairlist", quote="USDT", size=200))
        tickers = client.fetch_tickers()
        usdc = pairlist(client, UniverseConfig(source="pairlist", quote="USDC", size=200))
        floor = pairlist(client, UniverseConfig(source="pairlist", quote="USDT", size=200,
                                                min_quote_volume=float(tickers["ETH/USDT"]["quoteVolume"]),
                                                exclude=("BTC/USDT",)))
        settings = load_settings(env={"CRYPTOSTREAM_UNIVERSE__SOURCE": "pairlist", "CRYPTOSTREAM_UNIVERSE__SIZE": "50",
                                      "CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url})
        chosen = with_universe(settings).symbols
    assert len(got) == 200 and all(s.endswith("/USDT") for s in got) and got[0] == "BTC/USDT"
    volumes = [float(tickers[s]["quoteVolume"]) for s in got]
    assert volumes == sorted(volumes, reverse=True)
    left_out = [float(t["quoteVolume"]) for s, t in tickers.items() if s.endswith("/USDT") and s not in got]
    assert len(left_out) == 50 and max(left_out) <= min(volumes)
    assert usdc and all(s.endswith("/USDC") for s in usdc) and len(usdc) == 25
    assert "BTC/USDT" not in floor and "ETH/USDT" in floor
    assert all(float(tickers[s]["quoteVolume"]) >= float(tickers["ETH/USDT"]["quoteVolume"]) for s in floor)
    assert chosen == got[:50]


def test_pairlist_settings_are_validated_and_an_empty_pairlist_names_the_fields() -> None:
    with pytest.raises(SettingsError, match=r"universe.quote \(env CRYPTOSTREAM_UNIVERSE__QUOTE\)"):
        load_settings(env={"CRYPTOSTREAM_UNIVERSE__QUOTE": "usd t"})
    with pytest.raises(SettingsError, match=r"universe.size"):
        load_settings(env={"CRYPTOSTREAM_UNIVERSE__SIZE": "0"})
    with running_replay(universe=20, synthetic_duration_s=120, seed=7, rest_horizon="all") as ex:
        with pytest.raises(SettingsError, match="universe.min_quote_volume"):
            pairlist(make_binance(ex.http_url), UniverseConfig(source="pairlist", min_quote_volume=1e18))
    settings = load_settings(env={"CRYPTOSTREAM_UNIVERSE__SOURCE": "pairlist",
                                  "CRYPTOSTREAM_EXCHANGE__HTTP_URL": "http://127.0.0.1:9"})
    with pytest.raises(SettingsError, match="exchange.http_url"):
        with_universe(settings)
    assert with_universe(load_settings(env={})).symbols == ("BTC/USDT", "ETH/USDT", "SOL/USDT")
