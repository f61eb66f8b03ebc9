"""Registries of members known only by their out-of-sample fold predictions, and the ensemble over them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper

from training.registry import Parity, save_model
from training.train import TrainJob, train_ensemble


def identity_onnx() -> bytes:
    """A valid stand-in graph for a member whose out-of-sample rows are all a test reads."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    y = helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["p"])], "member", [x], [y])
    return onnx.helper.make_model(graph).SerializeToString()  # type: ignore[no-any-return]


def member_oos(times: pd.DatetimeIndex, symbols: Sequence[str], folds: int, seed: int, strength: float,
               labels: np.ndarray | None = None) -> pd.DataFrame:
    """Fold predictions of one member over ``times`` (equal folds in time order), leaning to the label by ``strength``."""
    rng = np.random.default_rng(seed)
    per = -(-len(times) // folds)
    frame = pd.DataFrame([(s, t, i // per) for i, t in enumerate(times) for s in symbols],
                         columns=["symbol", "event_timestamp", "fold"])
    drawn = rng.integers(0, 2, len(frame))  # drawn either way: the noise below is the same draw
    y = drawn if labels is None else labels
    frame["label"], frame["fwd_ret"] = y, np.where(y == 1, 0.01, -0.01)
    frame["p"] = 1.0 / (1.0 + np.exp(-(strength * (2 * y - 1) + rng.normal(0, 1, len(frame)))))
    return frame


def register_member(root: Path, family: str, oos: pd.DataFrame, aucs: Sequence[float]) -> None:
    """Save a member version with these fold predictions (``oos.csv``) and per-fold AUCs."""
    out = oos.assign(event_timestamp=oos.event_timestamp.map(pd.Timestamp.isoformat))
    folds = [{"fold": k, "roc_auc": float(a), "sharpe": 0.0} for k, a in enumerate(aucs)]
    save_model(root, family, files={"model.onnx": identity_onnx(), "oos.csv": out.to_csv(index=False).encode()},
               feature_service=f"{family}_1h_v1", features=["f"], train_start=oos.event_timestamp.min(),
               train_end=oos.event_timestamp.max(), data_hash="-", seeds={"seed": 0},
               config={"timeframe": "1h", "horizon": 1},
               metrics={"folds": folds, "mean": {"roc_auc": float(np.mean(aucs)), "sharpe": 0.0}},
               parity=Parity(0.0, 1e-6, 1))


def register_ensemble(root: Path, members: Sequence[str], **job: object) -> None:
    """Build the ensemble over the latest ``members`` with ``training.train``'s own code."""
    train_ensemble(TrainJob(family="ensemble", registry=root, log_dir=root / "logs", work_dir=root / "work",
                            members=tuple(members), **job))  # type: ignore[arg-type]
