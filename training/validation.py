"""Walk-forward splits over decision times, with purging and an embargo.

Rows are (symbol, decision time t); several symbols share a time, so folds are
cut on the sorted unique times and every row of a time goes to the same side.
The label of a row at t uses prices in ``[t, t + horizon * bar)`` (see
``training/datasets.py``).  For a test fold whose times run from ``T0`` to ``T1``:

* **purge**: a training row at t is dropped when its label window overlaps the
  fold's label span ``[T0, T1 + horizon * bar)``, i.e. when
  ``T0 - horizon * bar < t < T1 + horizon * bar``; rows before the fold therefore
  end their label strictly before ``T0``;
* **embargo**: training rows with ``T1 <= t < T1 + (horizon + embargo) * bar``
  are dropped as well (serially correlated features just after a test fold).

Modes: ``expanding`` (train on every time before the fold), ``rolling`` (the last
``train_size`` times before the fold), and ``kfold`` (purged k-fold: train on
both sides of the fold; the only mode in which the embargo binds, since
walk-forward never trains after its test fold).  Folds tile the last
``n_splits * test_size`` times in order and never overlap.

Early stopping uses :meth:`WalkForward.carve_validation`: the last ``frac`` of a
fold's training times become the validation slice, and the remaining training
rows are purged against it, so neither the fit nor the stopping rule sees the test
fold or a label that overlaps the validation slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class WalkForwardConfig:
    """Split settings; sizes count unique decision times, ``horizon``/``embargo`` count bars."""

    n_splits: int = 5
    mode: Literal["expanding", "rolling", "kfold"] = "expanding"
    test_size: int | None = None  # default: times // (n_splits + 1) (kfold: times // n_splits)
    train_size: int | None = None  # rolling only; default 3 * test_size
    horizon: int = 1
    embargo: int = 0

    def __post_init__(self) -> None:
        if self.n_splits < 1:
            raise ValueError("n_splits must be at least 1")
        if self.horizon < 1 or self.embargo < 0:
            raise ValueError("horizon must be >= 1 and embargo >= 0")
        if self.mode not in ("expanding", "rolling", "kfold"):
            raise ValueError(f"mode must be expanding, rolling or kfold, not {self.mode!r}")


@dataclass(frozen=True)
class Split:
    """One fold: row indices (into the frame) of the purged training side and of the test fold."""

    fold: int
    train: np.ndarray
    test: np.ndarray
    test_start: pd.Timestamp
    test_end: pd.Timestamp  # last decision time in the fold (inclusive)


class WalkForward:
    """Purged walk-forward splitter over the decision times of a frame."""

    def __init__(self, times: ArrayLike, bar: pd.Timedelta | str, config: WalkForwardConfig) -> None:
        """Index the rows' decision times.

        Args:
            times: decision time of every row (e.g. ``frame["event_timestamp"]``), UTC.
            bar: bar length (``pd.Timedelta`` or a string such as ``"1h"``).
            config: split settings.
        """
        ts = pd.to_datetime(pd.Series(np.asarray(times)), utc=True)
        self.ns = (ts - pd.Timestamp(0, tz="UTC")).to_numpy("timedelta64[ns]").astype(np.int64)
        self.unique = np.unique(self.ns)
        self.pos = np.searchsorted(self.unique, self.ns)  # row -> index of its time
        self.bar_ns = int(pd.Timedelta(bar).value)
        self.config = config

    def _purge(self, candidates: np.ndarray, t0: int, t1: int, embargo: int) -> np.ndarray:
        """Drop candidate rows whose label window meets [t0, t1 + h*bar) or that fall in the embargo."""
        h = self.config.horizon * self.bar_ns
        t = self.ns[candidates]
        overlap = (t > t0 - h) & (t < t1 + h + embargo * self.bar_ns)
        return candidates[~overlap]

    def splits(self) -> list[Split]:
        """Return the folds in time order.

        Raises:
            ValueError: too few times for the requested folds, or a fold whose purged training side is empty.
        """
        c, n = self.config, len(self.unique)
        k = c.n_splits
        test_size = c.test_size or (n // k if c.mode == "kfold" else n // (k + 1))
        first = n - k * test_size
        if test_size < 1 or first < (0 if c.mode == "kfold" else 1):
            raise ValueError(f"{n} decision times cannot hold {k} test folds of {test_size} times "
                             f"with a training side before the first")
        rows = np.arange(len(self.ns))
        out = []
        for f in range(k):
            a, b = first + f * test_size, first + (f + 1) * test_size - 1  # time positions, inclusive
            test = rows[(self.pos >= a) & (self.pos <= b)]
            if c.mode == "kfold":
                cand = rows[(self.pos < a) | (self.pos > b)]
            elif c.mode == "rolling":
                lo = max(0, a - (c.train_size or 3 * test_size))
                cand = rows[(self.pos >= lo) & (self.pos < a)]
            else:
                cand = rows[self.pos < a]
            train = self._purge(cand, int(self.unique[a]), int(self.unique[b]), c.embargo)
            if len(train) == 0:
                raise ValueError(f"fold {f}: no training rows left after purging (horizon {c.horizon})")
            out.append(Split(f, train, test, pd.Timestamp(int(self.unique[a]), tz="UTC"),
                             pd.Timestamp(int(self.unique[b]), tz="UTC")))
        return out

    def carve_validation(self, train_idx: ArrayLike, frac: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
        """Split a fold's training rows into (fit, validation) by time, validation last.

        The validation slice is the last ``frac`` of the training side's unique times
        (at least one); fit rows whose label window overlaps it are purged.  In
        ``kfold`` mode the slice is the end of the whole training side (which may
        lie after the test fold).

        Args:
            train_idx: row indices of a fold's training side.
            frac: share of the training side's times used for validation, in (0, 1).

        Returns:
            (fit row indices, validation row indices).
        """
        if not 0.0 < frac < 1.0:
            raise ValueError("frac must be in (0, 1)")
        idx = np.asarray(train_idx)
        times = np.unique(self.pos[idx])
        n_val = max(1, int(round(len(times) * frac)))
        if n_val >= len(times):
            raise ValueError("training side too short to carve a validation slice")
        first_val = times[-n_val]
        val = idx[self.pos[idx] >= first_val]
        fit = self._purge(idx[self.pos[idx] < first_val], int(self.unique[first_val]),
                          int(self.unique[times[-1]]), 0)
        if len(fit) == 0:
            raise ValueError("no fit rows left after purging against the validation slice")
        return fit, val
