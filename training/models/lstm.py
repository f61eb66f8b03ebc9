"""LSTM up/down classifier over sliding windows of per-symbol features, with a streaming form.

Windowed vs streaming, and why they agree.  Every training window of ``window`` rows
starts from a zero (h, c) state, and the prediction for decision time t is the logit
after the row at t.  :meth:`LstmNet.step` runs the same ``nn.LSTM`` one row at a time
from a carried state, so streaming the rows of a window from a zero state gives the
windowed output (tested to 1e-6).  A single state carried forever would drift away
from what training saw, so the streaming scorer keeps ``window`` staggered states per
symbol: slot k is reset to zero every ``window`` bars at offset k, all slots advance
with each new bar in one batched step, and the slot that has just seen exactly
``window`` rows gives the prediction (``inference.lstm_stream.LstmStreamRunner``).
Scoring a bar is therefore one LSTM step (of batch ``window`` per symbol), not a
re-run of the whole window, and equals the windowed model exactly.

Standardisation (mean/std of the fit rows only) lives inside the network as buffers,
so the exported ONNX graphs take raw features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from training.models.torch_common import (
    EarlyStopping,
    MetricLog,
    fit_standardizer,
    pick_device,
    seeded,
    time_split,
)


@dataclass(frozen=True)
class LstmConfig:
    """Hyper-parameters and training settings of the LSTM."""

    window: int = 32
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    max_epochs: int = 50
    patience: int = 5
    clip_norm: float = 1.0
    val_fraction: float = 0.2
    embargo: int = 1
    seed: int = 0
    num_threads: int = 1
    device: str | None = None
    log_dir: str | None = None

    def __post_init__(self) -> None:
        if self.window < 1 or self.hidden < 1 or self.layers < 1:
            raise ValueError("window, hidden and layers must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in (0, 1)")


class LstmNet(nn.Module):
    """Standardise -> 2-layer LSTM -> dropout -> linear logit; windowed and step forms share weights."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, n_features: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.lstm = nn.LSTM(n_features, hidden, layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)
        self.hidden, self.layers = hidden, layers

    def zero_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return zero (h, c), each ``[layers, batch, hidden]``."""
        z = torch.zeros(self.layers, batch, self.hidden, device=self.mean.device)
        return z, z.clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logit after the last row of each window; ``x`` is ``[batch, window, F]``."""
        z = (x - self.mean) / self.scale
        h0 = torch.zeros(self.layers, x.shape[0], self.hidden, dtype=x.dtype, device=x.device)
        out, _ = self.lstm(z, (h0, h0))
        return self.head(self.drop(out[:, -1])).squeeze(-1)

    def step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance one row: ``x`` ``[batch, F]``, state ``[layers, batch, hidden]`` -> (logit, h', c')."""
        z = ((x - self.mean) / self.scale).unsqueeze(1)
        out, (h2, c2) = self.lstm(z, (h, c))
        return self.head(self.drop(out[:, 0])).squeeze(-1), h2, c2


def _ns(times: pd.Series) -> np.ndarray:
    """Return UTC nanoseconds since the epoch of a time column (int64)."""
    # as_unit: pandas keeps the source unit (Feast returns microseconds); asi8 is in that unit
    return pd.DatetimeIndex(pd.to_datetime(times, utc=True)).as_unit("ns").asi8


def window_index(frame: pd.DataFrame, window: int, bar: pd.Timedelta | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Order rows by (symbol, time) and find the rows that close a full window.

    Args:
        frame: rows with ``symbol`` and ``event_timestamp``.
        window: rows per window.
        bar: if given, a window must span exactly ``(window - 1) * bar`` (no missing bars).

    Returns:
        ``order`` (frame positions sorted by symbol then time) and ``ends`` (positions in
        ``order`` of each window's last row; the window is ``order[end - window + 1 : end + 1]``).
    """
    ts = _ns(frame["event_timestamp"])
    order = np.lexsort((ts, frame["symbol"].to_numpy()))
    sym, ts = frame["symbol"].to_numpy()[order], ts[order]
    start = np.r_[0, np.flatnonzero(sym[1:] != sym[:-1]) + 1]  # first row of each symbol
    run_start = np.repeat(start, np.diff(np.r_[start, len(sym)]))
    pos = np.arange(len(sym))
    ok = pos - run_start >= window - 1
    if bar is not None:
        first = np.clip(pos - window + 1, 0, None)
        ok &= (ts - ts[first]) == bar.value * (window - 1)
    return order, pos[ok]


def gather(values: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """Return windows ``values[end - window + 1 : end + 1]`` stacked as ``[len(ends), window, F]``."""
    return values[ends[:, None] + np.arange(1 - window, 1)[None, :]]


def _mean_loss(net: LstmNet, values: np.ndarray, y: np.ndarray, ends: np.ndarray, window: int,
               device: torch.device, batch_size: int = 4096) -> float:
    """Mean BCE-with-logits loss of ``net`` over the windows closing at ``ends``."""
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(ends), batch_size):
            e = ends[i:i + batch_size]
            logits = net(torch.from_numpy(gather(values, e, window)).to(device))
            target = torch.from_numpy(y[e]).to(device)
            total += float(nn.functional.binary_cross_entropy_with_logits(
                logits, target, reduction="sum"))
    return total / len(ends)


class LstmClassifier:
    """Train, predict, save and load the windowed LSTM classifier on a feature frame."""

    def __init__(self, features: list[str], config: LstmConfig | None = None) -> None:
        self.features = list(features)
        self.config = config or LstmConfig()
        c = self.config
        self.net = LstmNet(len(self.features), c.hidden, c.layers, c.dropout)
        self.history: list[dict[str, float]] = []
        self.best_epoch = -1

    def fit(self, frame: pd.DataFrame, label: str = "label", bar: pd.Timedelta | None = None
            ) -> LstmClassifier:
        """Fit on ``frame``; the last ``val_fraction`` of decision times drive early stopping.

        Args:
            frame: rows with ``symbol``, ``event_timestamp``, the features and ``label``.
            label: 0/1 target column.
            bar: bar length; windows across missing bars are skipped when given.
        """
        c = self.config
        order, ends = window_index(frame, c.window, bar)
        values = frame[self.features].to_numpy(np.float32)[order]
        y_all = frame[label].to_numpy(np.float32)[order]
        times = _ns(frame["event_timestamp"])[order]
        fit_mask, val_mask = time_split(times[ends], c.val_fraction, c.embargo)
        fit_ends, val_ends = ends[fit_mask], ends[val_mask]
        fit_rows = np.unique(gather(np.arange(len(values)), fit_ends, c.window))
        mean, scale = fit_standardizer(values[fit_rows])
        device = pick_device(c.device)
        log = MetricLog(c.log_dir)
        with seeded(c.seed, c.num_threads) as gen:
            net = LstmNet(len(self.features), c.hidden, c.layers, c.dropout)
            net.mean.copy_(torch.from_numpy(mean))
            net.scale.copy_(torch.from_numpy(scale))
            net.to(device)
            opt = torch.optim.Adam(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
            loss_fn = nn.BCEWithLogitsLoss()
            stop = EarlyStopping(c.patience)
            for epoch in range(c.max_epochs):
                net.train()
                perm = torch.randperm(len(fit_ends), generator=gen).numpy()
                total = 0.0
                for i in range(0, len(perm), c.batch_size):
                    idx = fit_ends[perm[i:i + c.batch_size]]
                    xb = torch.from_numpy(gather(values, idx, c.window)).to(device)
                    yb = torch.from_numpy(y_all[idx]).to(device)
                    opt.zero_grad()
                    loss = loss_fn(net(xb), yb)
                    loss.backward()
                    nn.utils.clip_grad_norm_(net.parameters(), c.clip_norm)
                    opt.step()
                    total += loss.item() * len(idx)
                net.eval()
                val_loss = _mean_loss(net, values, y_all, val_ends, c.window, device)
                rec = {"epoch": epoch, "train_loss": total / len(fit_ends), "val_loss": val_loss}
                self.history.append(rec)
                log.scalar("loss/train", rec["train_loss"], epoch)
                log.scalar("loss/val", val_loss, epoch)
                if stop.update(epoch, val_loss, net):
                    break
            stop.restore(net)
        log.close()
        self.best_epoch = stop.best_epoch
        self.net = net.cpu().eval()
        return self

    def predict_proba(self, frame: pd.DataFrame, bar: pd.Timedelta | None = None,
                      batch_size: int = 4096) -> np.ndarray:
        """Return P(up) per row of ``frame`` (NaN where the row does not close a full window)."""
        w = self.config.window
        order, ends = window_index(frame, w, bar)
        values = frame[self.features].to_numpy(np.float32)[order]
        out = np.full(len(frame), np.nan)
        self.net.eval()
        with torch.no_grad():
            for i in range(0, len(ends), batch_size):
                e = ends[i:i + batch_size]
                logits = self.net(torch.from_numpy(gather(values, e, w)))
                out[order[e]] = torch.sigmoid(logits).double().numpy()
        return out

    def save(self, path: str | Path) -> None:
        """Write weights, standardisation, feature list and config to ``path`` (torch format)."""
        torch.save({"features": self.features, "config": asdict(self.config),
                    "state_dict": self.net.state_dict(), "best_epoch": self.best_epoch}, path)

    @classmethod
    def load(cls, path: str | Path) -> LstmClassifier:
        """Read a model written by :meth:`save`."""
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = cls(blob["features"], LstmConfig(**blob["config"]))
        model.net.load_state_dict(blob["state_dict"])
        model.net.eval()
        model.best_epoch = int(blob["best_epoch"])
        return model
