"""LightGBM baseline: up/down (or forward-return regression) with purged walk-forward validation.

Fixes over the seed's example: early stopping watches a validation slice carved
from the END of each fold's training side (purged, see ``training/validation.py``),
never the fold it then scores; the final model is trained on all rows for the
median best iteration found by the folds, not a fixed 1000 rounds.

Determinism: ``deterministic=True``, ``force_row_wise=True``, a fixed
``num_threads`` and every LightGBM seed derived from ``config.seed``, so training
twice on the same data gives the same trees.

Regression (``objective="regression"``) predicts ``fwd_ret``; its
:meth:`LightGBMModel.predict_proba` maps a prediction r to
``sigmoid(r / sigma)`` with sigma the training target's standard deviation, a
monotone map so accuracy, AUC and the sign trade are comparable (log loss and
Brier of that map are not calibrated).  ONNX export supports ``binary`` only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd

from flows.execution.costs import COSTS
from training.metrics import TradingConfig, fold_metrics, mean_metrics
from training.validation import WalkForward

DEFAULT_PARAMS: dict[str, Any] = {"learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 100,
                                  "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 5,
                                  "lambda_l2": 1.0}


@dataclass(frozen=True)
class LightGBMConfig:
    """Frozen model config; ``params`` are LightGBM parameters on top of the deterministic ones."""

    objective: Literal["binary", "regression"] = "binary"
    horizon: int = 1
    params: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_PARAMS))
    seed: int = 42
    num_threads: int = 1
    early_stopping_rounds: int = 50
    max_rounds: int = 2000
    valid_frac: float = 0.2
    timeframe: str = "1h"
    fee_bps: float = COSTS.fee_bps

    def __post_init__(self) -> None:
        if self.objective not in ("binary", "regression"):
            raise ValueError(f"objective must be 'binary' or 'regression', not {self.objective!r}")
        if self.horizon < 1 or self.max_rounds < 1 or self.early_stopping_rounds < 1 or self.num_threads < 1:
            raise ValueError("horizon, max_rounds, early_stopping_rounds and num_threads must be >= 1")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-able data (hashed into the registry's config_hash)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["params"] = dict(self.params)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LightGBMConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)

    def lgb_params(self) -> dict[str, Any]:
        """Return the full LightGBM parameter dict, deterministic settings last so they win."""
        s = self.seed
        return {**dict(self.params),
                "objective": self.objective, "metric": "binary_logloss" if self.objective == "binary" else "l2",
                "verbose": -1, "deterministic": True, "force_row_wise": True, "num_threads": self.num_threads,
                "seed": s, "bagging_seed": s + 1, "feature_fraction_seed": s + 2, "data_random_seed": s + 3,
                "extra_seed": s + 4, "drop_seed": s + 5, "objective_seed": s + 6}


@dataclass
class CVResult:
    """Walk-forward output: per-fold metrics (with best iteration), their means, out-of-sample predictions."""

    folds: list[dict[str, Any]]
    mean: dict[str, float]
    best_iterations: list[int]
    oos: pd.DataFrame  # symbol, event_timestamp, fold, p, label, fwd_ret


class LightGBMModel:
    """LightGBM up/down model with purged walk-forward validation and a validated final round count."""

    def __init__(self, config: LightGBMConfig | None = None) -> None:
        """Create an untrained model."""
        self.config = config or LightGBMConfig()
        self.features: tuple[str, ...] = ()
        self.booster: lgb.Booster | None = None
        self.final_rounds: int | None = None
        self.target_scale: float = 1.0

    def prepare_data(self, frame: pd.DataFrame, features: Sequence[str] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Return (X float64 [rows, features], y) from a training frame; remembers the feature order.

        Raises:
            KeyError: the frame lacks features (named) or the label columns.
        """
        if features is not None:
            self.features = tuple(features)
        if not self.features:
            raise ValueError("no feature list: pass features to prepare_data first")
        missing = [c for c in (*self.features, "label", "fwd_ret") if c not in frame.columns]
        if missing:
            raise KeyError(f"training frame lacks columns {missing}")
        x = frame.loc[:, list(self.features)].to_numpy(np.float64)
        y = frame["label" if self.config.objective == "binary" else "fwd_ret"].to_numpy(np.float64)
        return x, y

    def _train(self, x: np.ndarray, y: np.ndarray, rounds: int, valid: tuple[np.ndarray, np.ndarray] | None
               ) -> lgb.Booster:
        params = self.config.lgb_params()
        dtrain = lgb.Dataset(x, y, feature_name=list(self.features), params={"verbose": -1}, free_raw_data=True)
        if valid is None:
            return lgb.train(params, dtrain, num_boost_round=rounds)
        dval = lgb.Dataset(valid[0], valid[1], reference=dtrain)
        return lgb.train(params, dtrain, num_boost_round=rounds, valid_sets=[dval], valid_names=["val"],
                         callbacks=[lgb.early_stopping(self.config.early_stopping_rounds, verbose=False)])

    def _proba(self, booster: lgb.Booster, x: np.ndarray, iteration: int | None = None) -> np.ndarray:
        raw = booster.predict(np.asarray(x, np.float64), num_iteration=iteration)
        if self.config.objective == "binary":
            return np.asarray(raw, np.float64)
        return 1.0 / (1.0 + np.exp(-np.asarray(raw, np.float64) / self.target_scale))

    def cross_validate(self, frame: pd.DataFrame, splitter: WalkForward,
                       features: Sequence[str] | None = None) -> CVResult:
        """Train one early-stopped model per fold and score its test fold.

        Args:
            frame: training frame (rows aligned with the times ``splitter`` was built on).
            splitter: purged walk-forward splitter; validation is carved from each training side.
            features: ordered feature names (defaults to those of :meth:`prepare_data`).
        """
        x, y = self.prepare_data(frame, features)
        trading = TradingConfig(self.config.fee_bps, self.config.timeframe, self.config.horizon)
        folds, best, oos = [], [], []
        for split in splitter.splits():
            fit, val = splitter.carve_validation(split.train, self.config.valid_frac)
            if self.config.objective == "regression":
                self.target_scale = float(np.std(y[fit])) or 1.0
            booster = self._train(x[fit], y[fit], self.config.max_rounds, (x[val], y[val]))
            it = int(booster.best_iteration or booster.current_iteration())
            p = self._proba(booster, x[split.test], it)
            t = frame.iloc[split.test]
            m = fold_metrics(t["label"], p, t["fwd_ret"], t["symbol"], t["event_timestamp"], trading)
            folds.append({"fold": split.fold, "best_iteration": it, "train_rows": int(len(fit)),
                          "valid_rows": int(len(val)), "test_start": split.test_start.isoformat(),
                          "test_end": split.test_end.isoformat(), **m})
            best.append(it)
            oos.append(pd.DataFrame({"symbol": t["symbol"].to_numpy(), "event_timestamp": t["event_timestamp"],
                                     "fold": split.fold, "p": p, "label": t["label"].to_numpy(),
                                     "fwd_ret": t["fwd_ret"].to_numpy()}))
        numeric = [{k: v for k, v in f.items() if isinstance(v, float)} for f in folds]
        return CVResult(folds, mean_metrics(numeric), best, pd.concat(oos, ignore_index=True))

    def fit_final(self, frame: pd.DataFrame, rounds: int | Sequence[int],
                  features: Sequence[str] | None = None) -> LightGBMModel:
        """Train on every row for the round count validation found.

        Args:
            frame: all training rows.
            rounds: a round count, or the folds' best iterations (their median is used).
            features: ordered feature names (defaults to those of :meth:`prepare_data`).
        """
        x, y = self.prepare_data(frame, features)
        n = int(rounds) if isinstance(rounds, (int, np.integer)) else int(np.median(np.asarray(rounds)))
        self.final_rounds = max(1, n)
        if self.config.objective == "regression":
            self.target_scale = float(np.std(y)) or 1.0
        self.booster = self._train(x, y, self.final_rounds, None)
        return self

    def _require(self) -> lgb.Booster:
        if self.booster is None:
            raise RuntimeError("model not trained: call fit_final or load first")
        return self.booster

    def predict_proba(self, x: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Return P(up) per row; a DataFrame is reordered to the model's features."""
        arr = x.loc[:, list(self.features)].to_numpy(np.float64) if isinstance(x, pd.DataFrame) else x
        return self._proba(self._require(), np.asarray(arr, np.float64))

    def predict_with_confidence(self, x: np.ndarray | pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (P(up), prediction 1/0 from p > 0.5, confidence = |p - 0.5| * 2)."""
        p = self.predict_proba(x)
        return p, (p > 0.5).astype(np.int8), np.abs(p - 0.5) * 2.0

    def feature_importance(self) -> pd.Series:
        """Return total gain per feature, largest first."""
        gain = self._require().feature_importance(importance_type="gain")
        return pd.Series(gain, index=list(self.features), name="gain").sort_values(ascending=False)

    def save(self, directory: str | Path) -> dict[str, bytes]:
        """Write ``model.txt`` (LightGBM text) and ``config.json``; return them as bytes for the registry."""
        files = {"model.txt": self._require().model_to_string().encode(),
                 "config.json": json.dumps({"config": self.config.to_dict(), "features": list(self.features),
                                            "final_rounds": self.final_rounds,
                                            "target_scale": self.target_scale}, indent=2, sort_keys=True).encode()}
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)
        return files

    @classmethod
    def load(cls, directory: str | Path) -> LightGBMModel:
        """Load a model written by :meth:`save`."""
        d = Path(directory)
        meta = json.loads((d / "config.json").read_text())
        model = cls(LightGBMConfig.from_dict(meta["config"]))
        model.features = tuple(meta["features"])
        model.final_rounds = meta["final_rounds"]
        model.target_scale = float(meta["target_scale"])
        model.booster = lgb.Booster(model_str=(d / "model.txt").read_text())
        return model
