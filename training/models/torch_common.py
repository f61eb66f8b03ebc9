"""Shared pieces of the torch models: seeding, device, standardisation, early stopping, logs.

Every torch training run goes through :func:`seeded` so that two runs with the same
seed give the same weights on the same machine: it seeds torch and numpy, turns on
deterministic algorithms, fixes the intra-op thread count, and puts the global flags
back afterwards so that importing code is not surprised.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


@contextlib.contextmanager
def seeded(seed: int, num_threads: int = 1) -> Iterator[torch.Generator]:
    """Seed torch, numpy and random; use deterministic kernels and a fixed thread count.

    Args:
        seed: the run's seed.
        num_threads: intra-op threads for the run (results can depend on it).

    Yields:
        A torch generator seeded with ``seed`` for shuffling.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def pick_device(device: str | None = None) -> torch.device:
    """Return ``device`` if given, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fit_standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return per-column mean and scale of training rows (scale 1 where a column is constant).

    Args:
        x: training rows, shape ``[rows, features]``; fit on the training side only.
    """
    flat = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
    mean = flat.mean(axis=0)
    std = flat.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def time_split(times: np.ndarray, val_fraction: float, embargo: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows by decision time: the last ``val_fraction`` of times validate, earlier ones fit.

    The ``embargo`` decision times just before the validation slice are dropped from
    the fit side, so that no fit label (horizon ``embargo`` bars) overlaps validation.

    Args:
        times: decision time of each row (any sortable dtype).
        val_fraction: share of distinct decision times kept for validation, in (0, 1).
        embargo: decision times dropped between the two sides.

    Returns:
        Boolean masks ``(fit, val)`` over the rows.
    """
    uniq = np.unique(times)
    n_val = max(1, int(round(len(uniq) * val_fraction)))
    if len(uniq) - n_val - embargo < 1:
        raise ValueError(f"{len(uniq)} decision times are too few for val_fraction={val_fraction}, "
                         f"embargo={embargo}")
    val_start = uniq[len(uniq) - n_val]
    fit_end = uniq[len(uniq) - n_val - embargo - 1]
    return times <= fit_end, times >= val_start


@dataclass
class EarlyStopping:
    """Keep the best state_dict by validation loss; stop after ``patience`` epochs without gain."""

    patience: int
    min_delta: float = 0.0
    best_loss: float = float("inf")
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    _bad: int = field(default=0, repr=False)

    def update(self, epoch: int, loss: float, model: torch.nn.Module) -> bool:
        """Record an epoch's validation loss; return True when training should stop."""
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self._bad = loss, epoch, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            return False
        self._bad += 1
        return self._bad >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        """Load the best checkpoint back into ``model``."""
        if self.best_state is not None:
            model.load_state_dict(copy.deepcopy(self.best_state))


class MetricLog:
    """Scalars per epoch to a TensorBoard event file in ``log_dir`` (nothing when ``log_dir`` is None).

    ``tensorboard --logdir <data_dir>/logs`` shows every run: one directory per
    family and fold (``lstm/fold-0``, ``gnn/final``, ...).
    """

    def __init__(self, log_dir: str | Path | None) -> None:
        """Open the event file writer (imports TensorBoard's writer only when a directory is given)."""
        self.log_dir = Path(log_dir) if log_dir else None
        self._writer: Any = None
        if self.log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # a project dependency: no fallback

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(self.log_dir))

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Log one scalar."""
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
