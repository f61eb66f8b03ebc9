"""`python -m bytewax.run flows.live` with default settings (no API key) fills gaps and holes exactly.

The flow registers the Feast views itself (no ``feast apply``), as a first user run does.
The replay exchange streams real Binance trades (BTC and ETH, 2024-08-08, about half of
them in multi-trade aggregates) or a synthetic market with history before its stream,
whose klines the flow warms its features up on.  Reference: a clean run.  Then the same replay with the websocket dropped every
1,500 messages (gaps filled from the public aggTrades, split back into trades) and with
2% of the messages corrupted (each one a dead letter, its id refetched from REST): the
bars, and the features, must equal the clean run's.  Issue 17, defects 8 and 5: the
command used to refuse to start without a key, and a corrupted trade was never repaired.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from infra.replay_exchange.faults import FaultConfig
from infra.replay_exchange.server import running_replay
from tests.kit.recovery import run_flow
from tests.kit.replay import synthetic_with_history
from tests.kit.repo import applied_data_dir, copy_applied_feast, copy_feature_repo

RECORDED = ("BTC/USDT", "ETH/USDT")
CLEAN = FaultConfig()
DROPS = FaultConfig(drop_every=1500)
CORRUPT = FaultConfig(corrupt=0.02)


def _run(tmp: Path, symbols: tuple[str, ...], faults: FaultConfig, applied: Path | None = None,
         **replay) -> tuple[dict[str, pd.DataFrame], str]:
    """Run the flow over the replay; ``applied``: start with that data directory's Feast state (else it applies)."""
    repo = copy_feature_repo(tmp)
    if applied is not None:
        copy_applied_feast(applied, tmp / "var")
    with running_replay(speed=0, seed=3, faults=faults, wait_for_streams=len(symbols), **replay) as ex:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOSTREAM_")}
        env.update({"CRYPTOSTREAM_DATA_DIR": str(tmp / "var"), "CRYPTOSTREAM_FEAST_REPO": str(repo),
                    "CRYPTOSTREAM_SYMBOLS": ",".join(symbols), "CRYPTOSTREAM_BARS__TIMEFRAMES": "1m",
                    "CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url, "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url,
                    "CRYPTOSTREAM_EXCHANGE__IDLE_STOP_S": "3"})
        proc = run_flow(env)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
        injected = {r.kind for r in ex.faults}
        assert injected == ({"drop"} if faults.drop_every else {"corrupt"} if faults.corrupt else set())
    out = {}
    for t in ("bars_1m", "bar_features_1m"):
        files = sorted((tmp / "var" / "offline" / t).glob("*.parquet"))
        df = pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame({"symbol": [], "ts": []})
        out[t] = df.drop(columns=[c for c in ("run_id",) if c in df]).sort_values(["symbol", "ts"]).reset_index(drop=True)
    return out, err.decode()


@pytest.fixture(scope="module")
def applied(tmp_path_factory) -> Path:
    """One ``feast apply`` whose state the faulty runs start with; the clean runs register the views themselves."""
    return applied_data_dir(tmp_path_factory.mktemp("applied"))


@pytest.fixture(scope="module")
def recorded(shared_data) -> dict:
    return {"source": [shared_data / "binance-ws-2024-08-08"]}


@pytest.fixture(scope="module")
def recorded_clean(recorded, tmp_path_factory) -> dict[str, pd.DataFrame]:
    tables, err = _run(tmp_path_factory.mktemp("clean"), RECORDED, CLEAN, **recorded)
    assert "public aggregated trades" in err  # the start says how gaps are filled without a key
    assert len(tables["bars_1m"]) == 2 * 11  # 23:54 to 00:04; the 00:05 bar stays open
    return tables


@pytest.mark.parametrize("faults", [DROPS, CORRUPT], ids=["drops", "corrupt 2%"])
def test_recorded_trades_with_gaps_give_the_clean_bars(recorded, recorded_clean, faults, applied, tmp_path) -> None:
    got, _ = _run(tmp_path, RECORDED, faults, applied, **recorded)
    pd.testing.assert_frame_equal(got["bars_1m"], recorded_clean["bars_1m"], check_exact=True)


def test_corrupted_trades_repaired_give_the_clean_features(applied, tmp_path) -> None:
    # two hours streamed after the history the flow warms its features up on (exchange.warmup_klines)
    synthetic = {"synthetic": ("BTC/USDT",), "synthetic_rate": 1.0, **synthetic_with_history(2 * 3600)}
    clean, _ = _run(tmp_path / "clean", ("BTC/USDT",), CLEAN, **synthetic)
    got, _ = _run(tmp_path / "corrupt", ("BTC/USDT",), CORRUPT, applied, **synthetic)
    assert len(clean["bars_1m"]) >= 119 and len(clean["bar_features_1m"]) >= 50
    for t in ("bars_1m", "bar_features_1m"):
        pd.testing.assert_frame_equal(got[t], clean[t], check_exact=True, obj=t)
