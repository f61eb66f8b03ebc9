"""A registry of manifests only (no real models) and live settings, for the go-live gate's tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.settings import Settings, load_settings
from inference.manifest import TensorSpec
from inference.verdict import Verdict, judge
from training.registry import Parity, save_model

FEATS = ("ret_1", "rsi_14")
_IO = (TensorSpec("x", (-1, 2), "float32"),)


def register(root: Path, family: str, service: str, extra: dict[str, Any] | None = None, day: int = 1) -> str:
    """Register a version of ``family`` with placeholder files; return its version."""
    m = save_model(root, family, files={"model.onnx": f"{family}-{day}".encode()}, feature_service=service,
                   features=FEATS, train_start="2023-01-01T00:00:00Z", train_end="2023-06-01T00:00:00Z",
                   data_hash="d" * 64, seeds={"seed": 0}, config={"family": family, "day": day},
                   metrics={"folds": [], "mean": {}}, parity=Parity(0.0, 1e-5, 10), inputs=_IO, outputs=_IO,
                   extra=extra, now=lambda: datetime(2024, 1, day, tzinfo=UTC))
    return m.version


def deployment(root: Path, day: int = 1) -> dict[str, str]:
    """Register LightGBM, an ensemble of it and a tactical policy; return family -> version."""
    lgb = register(root, "lightgbm", "lightgbm_1h_v1", day=day)
    ens = register(root, "ensemble", "ensemble_1h_v1", {"members": {"lightgbm": lgb}}, day=day)
    pol = register(root, "rl_tactical", "rl_tactical_1h_v1", day=day)
    return {"lightgbm": lgb, "ensemble": ens, "rl_tactical": pol}


def live_settings(root: Path, **env: str) -> Settings:
    """Return settings of a fully asked-for live run trading the registry at ``root``."""
    base = {"CRYPTOSTREAM_MODE": "live", "CRYPTOSTREAM_EXECUTION__BROKER": "live",
            "CRYPTOSTREAM_EXECUTION__LIVE__CONFIRM": "true", "CRYPTOSTREAM_EXECUTION__LIVE__MAX_CAPITAL": "500",
            "CRYPTOSTREAM_EXCHANGE__API_KEY": "k", "CRYPTOSTREAM_EXCHANGE__API_SECRET": "s",
            "CRYPTOSTREAM_BARS__TIMEFRAMES": "1h", "CRYPTOSTREAM_SCORING__REGISTRY": str(root),
            "CRYPTOSTREAM_DATA_DIR": str(root.parent / "var")}
    return load_settings(env={**base, **env})


def verdict(versions: dict[str, str], strategy: str, chash: str, sharpe: float = 2.0) -> Verdict:
    """Return a verdict on two criteria; it passes when ``sharpe`` > 1.5."""
    crit = (judge("sharpe", sharpe, ">", 1.5), judge("max_drawdown", 0.08, "<=", 0.15))
    return Verdict(all(c.passed for c in crit), crit, strategy, chash, "d" * 64, dict(versions),
                   "2024-01-02T00:00:00Z", "wf")
