"""The live flow's synthetic websocket market (three symbols, duplicates and garbage mixed in) and its settings."""

from __future__ import annotations

import random
from pathlib import Path

import orjson

from flows.operators.features import WARMUP
from flows.settings import load_settings
from tests.kit.repo import applied_data_dir, copy_applied_feast

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
T0 = 1_700_000_000_000


def market(minutes: int = WARMUP + 40, seed: int = 5) -> list[tuple[str, int, list[bytes]]]:
    """Raw websocket batches for three symbols; a few duplicates and garbage lines mixed in.

    The default length is past the features' warm-up (:data:`~flows.operators.features.WARMUP` bars).
    """
    rng = random.Random(seed)
    price = {"BTC/USDT": 60_000.0, "ETH/USDT": 3_000.0, "SOL/USDT": 150.0}
    tid = dict.fromkeys(SYMBOLS, 1000)
    out = []
    for m in range(minutes):
        common = rng.gauss(0, 0.002)
        for sym in SYMBOLS:
            msgs = []
            for k in range(rng.randint(3, 12)):
                tid[sym] += 1
                price[sym] *= 1 + common / 4 + rng.gauss(0, 0.001)
                msgs.append(orjson.dumps({"e": "trade", "E": 0, "s": sym.replace("/", ""), "t": tid[sym],
                                          "p": f"{price[sym]:.6f}", "q": f"{rng.uniform(0.01, 2):.4f}",
                                          "T": T0 + m * 60_000 + k * 4_000 + rng.randint(0, 3_000),
                                          "m": rng.random() < 0.5}))
            if m % 17 == 3:
                msgs.append(msgs[0])  # a duplicate
                msgs.append(b'{"e":"trade","s":')  # malformed
            out.append((sym, T0 + m * 60_000, msgs))
    return out


REPO: dict[str, Path] = {}


def settings_for(tmp: Path):
    return load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
                              "CRYPTOSTREAM_FEAST_REPO": str(REPO["path"])})


def apply_once(base: Path) -> Path:
    """Copy the repository into ``base`` (the runs' ``REPO``), ``feast apply`` it for ``base/var``; return that.

    A module applies once; each run starts from a copy of the state (:func:`applied_settings`).
    """
    var = applied_data_dir(base)
    REPO["path"] = base / "feature_repo"
    return var


def applied_settings(var: Path, applied: Path):
    """The settings of a run in data directory ``var``, which starts with ``applied``'s Feast state (views registered)."""
    return settings_for(copy_applied_feast(applied, var))
