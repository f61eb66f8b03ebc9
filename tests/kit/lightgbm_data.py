"""A synthetic training frame for the LightGBM tests (one signal feature, noise, a constant) and their config."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.models.lightgbm_model import LightGBMConfig

FEATURES = ("f_signal", "f_noise", "f_mixed", "f_const")


def synthetic_frame(n_times: int = 400, symbols: tuple[str, ...] = ("A/USDT", "B/USDT", "C/USDT"),
                    seed: int = 0) -> pd.DataFrame:
    """Rows (time, symbol) whose label depends on f_signal (plus noise), sorted like build_training_set."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-01-01", periods=n_times, freq="h", tz="UTC")
    n = n_times * len(symbols)
    sig = rng.normal(size=n)
    fwd = 0.01 * (0.6 * sig + rng.normal(size=n))
    return pd.DataFrame({"symbol": np.tile(symbols, n_times), "event_timestamp": times.repeat(len(symbols)),
                         "fwd_ret": fwd, "label": (fwd > 0).astype(np.int8),
                         "f_signal": sig, "f_noise": rng.normal(size=n),
                         "f_mixed": sig * 0.3 + rng.normal(size=n), "f_const": 1.0})


CFG = LightGBMConfig(horizon=1, params={"learning_rate": 0.1, "num_leaves": 7, "min_data_in_leaf": 20,
                                        "bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.75},
                     max_rounds=300, early_stopping_rounds=20, seed=3)
