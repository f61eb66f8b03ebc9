"""Stateful LSTM up/down classifier trained with truncated BPTT; it scores a bar with one step.

Why training matches scoring.  At scoring time each symbol carries one (h, c) state
from bar to bar: it starts at zero with the symbol's first bar (and again after a
missing bar, a repeat or a step back) and the prediction for a bar is the logit after
that bar's row.  Training sees exactly that situation:

* per symbol, the rows split into *runs* of consecutive bars (a new run wherever a bar
  is missing, ``bar`` apart, as at scoring);
* each run of the fit period is cut into *segments* of ``segment`` rows (the cut points
  move every epoch: a random start offset per run from the seeded generator), each
  starting from a zero state; all segments form the batch dimension;
* within a segment the state is carried across chunks of ``bptt`` rows (detached, so
  gradients flow back at most ``bptt`` rows), so the network learns to use a state
  that has run for up to ``segment`` rows;
* the loss skips the first ``burn_in`` rows after a zero state, and those rows are NaN
  at scoring too: a prediction always comes from a state warmed by ``burn_in`` rows.

Validation runs each run statefully from its start through the fit rows and scores the
validation rows, as the stream would.  :meth:`LstmClassifier.predict_proba` runs every
run from a zero state in one sequence pass, which is what stepping the rows one at a
time gives (``inference.lstm_stream.LstmStreamRunner``, tested to 1e-5 through ONNX).
A state carried for longer than ``segment`` rows is outside what training saw; the
LSTM's forget gates make the state depend mostly on recent rows, and the validation
loss measures exactly that long-carried state.

Standardisation (mean/std of the fit rows only) lives inside the network as buffers,
so the exported ONNX graphs take raw features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

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

PASS_ROWS = 1 << 18  # rows x runs per no-grad pass chunk: bounds memory on long histories


@dataclass(frozen=True)
class LstmConfig:
    """Hyper-parameters and training settings of the LSTM.

    ``bptt``: rows per backpropagation chunk; ``burn_in``: rows after a zero state that
    are neither trained on nor scored; ``segment``: rows per training segment (zero
    state at its start); ``batch_size``: segments per mini-batch.
    """

    bptt: int = 32
    burn_in: int = 32
    segment: int = 512
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
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
        for name in ("bptt", "hidden", "layers", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"LstmConfig.{name} must be at least 1, not {getattr(self, name)}")
        if self.burn_in < 0:
            raise ValueError(f"LstmConfig.burn_in must be at least 0, not {self.burn_in}")
        if self.segment <= self.burn_in:
            raise ValueError(f"LstmConfig.segment ({self.segment}) must exceed burn_in ({self.burn_in}): "
                             "a segment's rows after the burn-in are the ones trained on")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LstmConfig.dropout must be in [0, 1), not {self.dropout}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"LstmConfig.val_fraction must be in (0, 1), not {self.val_fraction}")


class LstmNet(nn.Module):
    """Standardise -> stacked LSTM -> dropout -> linear logit; sequence and step forms share weights."""

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

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run rows ``x [batch, T, F]`` from state ``h, c [layers, batch, hidden]`` -> (logits [batch, T], h', c')."""
        out, (h2, c2) = self.lstm((x - self.mean) / self.scale, (h, c))
        return self.head(self.drop(out)).squeeze(-1), h2, c2

    def step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance one row: ``x [batch, F]``, state ``[layers, batch, hidden]`` -> (logit [batch], h', c')."""
        logits, h2, c2 = self(x.unsqueeze(1), h, c)
        return logits[:, 0], h2, c2


def _ns(times: pd.Series) -> np.ndarray:
    """Return UTC nanoseconds since the epoch of a time column (int64)."""
    # as_unit: pandas keeps the source unit (Feast returns microseconds); asi8 is in that unit
    return pd.DatetimeIndex(pd.to_datetime(times, utc=True)).as_unit("ns").asi8


class Runs(NamedTuple):
    """Rows ordered by (symbol, time), cut into runs of consecutive bars.

    ``order``: frame positions in that order; ``start``/``length``: each run's first
    position in ``order`` and its row count.
    """

    order: np.ndarray
    start: np.ndarray
    length: np.ndarray


def find_runs(frame: pd.DataFrame, bar: pd.Timedelta | None = None) -> Runs:
    """Order rows by (symbol, time) and split each symbol's rows where a bar is missing.

    Args:
        frame: rows with ``symbol`` and ``event_timestamp``.
        bar: bar length; when given, a new run starts wherever the next row is not exactly
            one bar later (a gap, a repeated time).  Without it, one run per symbol.
    """
    ts = _ns(frame["event_timestamp"])
    sym = frame["symbol"].to_numpy()
    order = np.lexsort((ts, sym))
    sym, ts = sym[order], ts[order]
    cut = sym[1:] != sym[:-1]
    if bar is not None:
        cut |= np.diff(ts) != bar.value
    start = np.r_[0, np.flatnonzero(cut) + 1] if len(order) else np.zeros(0, np.int64)
    return Runs(order, start, np.diff(np.r_[start, len(order)]))


def _split_runs(start: np.ndarray, length: np.ndarray, segment: int, offsets: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Cut each run at ``offset + k * segment``; return the pieces' starts and lengths."""
    starts, lengths = [], []
    for s, n, o in zip(start, length, offsets, strict=True):
        cuts = np.r_[0, np.arange(o if o > 0 else segment, n, segment), n]
        starts.append(s + cuts[:-1])
        lengths.append(np.diff(cuts))
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(starts), np.concatenate(lengths)


def _pad(values: np.ndarray, start: np.ndarray, length: np.ndarray, width: int
         ) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``values[start : start + length]`` as ``[len(start), width, ...]`` (zero-padded) and their row index."""
    pos = start[:, None] + np.arange(width)[None, :]
    valid = np.arange(width)[None, :] < length[:, None]
    pos = np.where(valid, pos, 0)
    out = values[pos]
    out[~valid] = 0
    return out, np.where(valid, pos, -1)


def segment_batch(values: np.ndarray, y: np.ndarray, start: np.ndarray, length: np.ndarray, burn_in: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack segments as ``x [b, W, F]``, ``target [b, W]`` and loss ``weight [b, W]`` (W = longest).

    The weight is 0 on each segment's first ``burn_in`` rows (a state just started from
    zero, never scored) and on padding, 1 elsewhere.
    """
    width = int(length.max())
    x, pos = _pad(values, start, length, width)
    target = np.where(pos >= 0, y[np.maximum(pos, 0)], 0.0).astype(np.float32)
    weight = ((pos >= 0) & (np.arange(width)[None, :] >= burn_in)).astype(np.float32)
    return x, target, weight


def sequence_logits(net: LstmNet, values: np.ndarray, runs: Runs, device: torch.device | None = None,
                    max_rows: int = PASS_ROWS) -> np.ndarray:
    """Logit of every row (positions of ``runs.order``), each run from a zero state, no gradient.

    Runs go longest first in batches; time is processed in chunks carrying (h, c), and a
    run leaves the batch when it ends, so the work is the rows themselves, not padding.
    """
    device = device or net.mean.device
    out = np.zeros(len(values), np.float32)
    by_len = np.argsort(-runs.length, kind="stable")
    start, length = runs.start[by_len], runs.length[by_len]
    with torch.no_grad():
        b0 = 0
        while b0 < len(start):
            width = int(length[b0])
            chunk = max(1, min(width, max_rows // max(1, len(start) - b0)))
            b1 = min(len(start), b0 + max(1, max_rows // chunk))
            h, c = net.zero_state(b1 - b0)
            for t0 in range(0, width, chunk):
                live = int((length[b0:b1] > t0).sum())  # sorted: the live runs are a prefix
                n = min(chunk, width - t0)
                xb, pos = _pad(values, start[b0:b0 + live] + t0,
                               np.clip(length[b0:b0 + live] - t0, 0, n), n)
                logits, h2, c2 = net(torch.from_numpy(xb).to(device), h[:, :live], c[:, :live])
                h, c = h2, c2
                ok = pos >= 0
                out[pos[ok]] = logits.cpu().numpy()[ok]
            b0 = b1
    return out


def _burn_mask(runs: Runs, burn_in: int, n: int) -> np.ndarray:
    """True for rows (positions of ``runs.order``) that are among the first ``burn_in`` rows of their run."""
    pos_in_run = np.arange(n) - np.repeat(runs.start, runs.length)
    return pos_in_run < burn_in


class LstmClassifier:
    """Train, predict, save and load the stateful LSTM classifier on a feature frame."""

    def __init__(self, features: list[str], config: LstmConfig | None = None) -> None:
        self.features = list(features)
        self.config = config or LstmConfig()
        c = self.config
        self.net = LstmNet(len(self.features), c.hidden, c.layers, c.dropout)
        self.history: list[dict[str, float]] = []
        self.best_epoch = -1

    def fit(self, frame: pd.DataFrame, label: str = "label", bar: pd.Timedelta | None = None
            ) -> LstmClassifier:
        """Fit with truncated BPTT; the last ``val_fraction`` of decision times drive early stopping.

        Args:
            frame: rows with ``symbol``, ``event_timestamp``, the features and ``label``.
            label: 0/1 target column.
            bar: bar length; runs (and so states) restart where a bar is missing when given.
        """
        c = self.config
        runs = find_runs(frame, bar)
        values = frame[self.features].to_numpy(np.float32)[runs.order]
        y_all = frame[label].to_numpy(np.float32)[runs.order]
        times = _ns(frame["event_timestamp"])[runs.order]
        fit_mask, val_mask = time_split(times, c.val_fraction, c.embargo)
        burn = _burn_mask(runs, c.burn_in, len(values))
        val_rows = np.flatnonzero(val_mask & ~burn)
        if len(val_rows) == 0:
            raise ValueError(f"no validation rows after a burn-in of {c.burn_in} rows: lower burn_in "
                             "or give more rows per symbol")
        # the fit rows of a run are its prefix (fit times come first): cut the runs there
        fit_len = np.add.reduceat(fit_mask.astype(np.int64), runs.start) if len(runs.start) else runs.start
        keep = fit_len > c.burn_in
        fit_start, fit_len = runs.start[keep], fit_len[keep]
        if len(fit_start) == 0:
            raise ValueError(f"no fit run is longer than burn_in={c.burn_in} rows")
        mean, scale = fit_standardizer(values[fit_mask])
        device = pick_device(c.device)
        log = MetricLog(c.log_dir)
        with seeded(c.seed, c.num_threads) as gen:
            net = LstmNet(len(self.features), c.hidden, c.layers, c.dropout)
            net.mean.copy_(torch.from_numpy(mean))
            net.scale.copy_(torch.from_numpy(scale))
            net.to(device)
            opt = torch.optim.Adam(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
            stop = EarlyStopping(c.patience)
            for epoch in range(c.max_epochs):
                offsets = torch.randint(c.segment, (len(fit_start),), generator=gen).numpy()
                train_loss = self._epoch(net, opt, values, y_all, fit_start, fit_len, offsets, gen, device)
                net.eval()
                logits = sequence_logits(net, values, runs, device)
                val_loss = float(nn.functional.binary_cross_entropy_with_logits(
                    torch.from_numpy(logits[val_rows]), torch.from_numpy(y_all[val_rows])))
                rec = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}
                self.history.append(rec)
                log.scalar("loss/train", train_loss, epoch)
                log.scalar("loss/val", val_loss, epoch)
                if stop.update(epoch, val_loss, net):
                    break
            stop.restore(net)
        log.close()
        self.best_epoch = stop.best_epoch
        self.net = net.cpu().eval()
        return self

    def _epoch(self, net: LstmNet, opt: torch.optim.Optimizer, values: np.ndarray, y: np.ndarray,
               run_start: np.ndarray, run_len: np.ndarray, offsets: np.ndarray, gen: torch.Generator,
               device: torch.device) -> float:
        """One pass over this epoch's segments in shuffled mini-batches; return the mean train loss."""
        c = self.config
        seg_start, seg_len = _split_runs(run_start, run_len, c.segment, offsets)
        useful = seg_len > c.burn_in
        seg_start, seg_len = seg_start[useful], seg_len[useful]
        perm = torch.randperm(len(seg_start), generator=gen).numpy()
        net.train()
        total, count = 0.0, 0
        for i in range(0, len(perm), c.batch_size):
            b = perm[i:i + c.batch_size]
            xb, yb, wb = segment_batch(values, y, seg_start[b], seg_len[b], c.burn_in)
            x, target, weight = (torch.from_numpy(a).to(device) for a in (xb, yb, wb))
            width = x.shape[1]
            h, cs = net.zero_state(len(b))
            for t0 in range(0, width, c.bptt):
                t1 = min(width, t0 + c.bptt)
                w = weight[:, t0:t1]
                n = float(w.sum())
                if n == 0:  # burn-in only: advance the state, nothing to learn here
                    with torch.no_grad():
                        _, h, cs = net(x[:, t0:t1], h, cs)
                    continue
                opt.zero_grad()
                logits, h, cs = net(x[:, t0:t1], h, cs)
                loss = (nn.functional.binary_cross_entropy_with_logits(
                    logits, target[:, t0:t1], reduction="none") * w).sum() / n
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), c.clip_norm)
                opt.step()
                h, cs = h.detach(), cs.detach()  # truncated BPTT: the state carries on, the gradient stops
                total += loss.item() * n
                count += int(n)
        return total / max(count, 1)

    def predict_proba(self, frame: pd.DataFrame, bar: pd.Timedelta | None = None) -> np.ndarray:
        """Return P(up) per row of ``frame``, each run from a zero state (NaN for its first ``burn_in`` rows)."""
        runs = find_runs(frame, bar)
        values = frame[self.features].to_numpy(np.float32)[runs.order]
        self.net.eval()
        logits = sequence_logits(self.net, values, runs, torch.device("cpu"))
        p = torch.sigmoid(torch.from_numpy(logits)).double().numpy()
        p[_burn_mask(runs, self.config.burn_in, len(values))] = np.nan
        out = np.full(len(frame), np.nan)
        out[runs.order] = p
        return out

    def sequences(self, frame: pd.DataFrame, length: int, bar: pd.Timedelta | None = None) -> np.ndarray:
        """Return raw feature rows of consecutive bars, ``[n, length, F]``: non-overlapping pieces of the runs."""
        runs = find_runs(frame, bar)
        values = frame[self.features].to_numpy(np.float32)[runs.order]
        starts = [s + k * length for s, n in zip(runs.start, runs.length, strict=True)
                  for k in range(int(n) // length)]
        if not starts:
            return np.zeros((0, length, len(self.features)), np.float32)
        return values[np.asarray(starts)[:, None] + np.arange(length)[None, :]]

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
