"""Dense graph attention network for node-level (per-asset) up/down prediction.

With a handful of assets the graph is a dense ``[N, N]`` adjacency per decision time,
so attention is computed with dense tensors and a mask (``adj != 0``) instead of
sparse message passing.  The layer follows GAT (Velickovic et al. 2018; the same
score as ``torch_geometric.nn.GATConv``) with one addition: a learned per-head
coefficient on the edge weight (the correlation), so the sign and size of a
correlation can shape the attention, and a residual projection of each node's own
input (PyG's ``residual=True``) so that attention over highly correlated neighbours
does not wash out an asset's own signal.  Only matmuls, softmax and ``where`` are used,
which export to ONNX with the legacy exporter and match onnxruntime to ~1e-7.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from training.models.graph import GraphConfig, GraphSet, build_graphs, to_rows
from training.models.torch_common import (
    EarlyStopping,
    MetricLog,
    fit_standardizer,
    pick_device,
    seeded,
    time_split,
)

_MASKED = -1e9  # finite, so a fully masked row cannot produce NaN in ONNX either


class DenseGATLayer(nn.Module):
    """Multi-head graph attention over a dense adjacency ``[B, N, N]`` (edge where ``adj != 0``)."""

    def __init__(self, in_dim: int, out_dim: int, heads: int, concat: bool, dropout: float,
                 residual: bool = True) -> None:
        super().__init__()
        self.heads, self.out_dim, self.concat = heads, out_dim, concat
        self.lin = nn.Linear(in_dim, heads * out_dim, bias=False)
        self.att_src = nn.Parameter(torch.empty(heads, out_dim))
        self.att_dst = nn.Parameter(torch.empty(heads, out_dim))
        self.att_edge = nn.Parameter(torch.zeros(heads))
        self.bias = nn.Parameter(torch.zeros(heads * out_dim if concat else out_dim))
        self.attn_drop = nn.Dropout(dropout)
        width = heads * out_dim if concat else out_dim
        self.res = nn.Linear(in_dim, width, bias=False) if residual else None
        nn.init.xavier_uniform_(self.lin.weight)
        nn.init.xavier_uniform_(self.att_src)
        nn.init.xavier_uniform_(self.att_dst)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Return node embeddings ``[B, N, heads*out]`` (concat) or ``[B, N, out]`` (mean of heads)."""
        b, n, _ = x.shape
        h = self.lin(x).view(b, n, self.heads, self.out_dim).transpose(1, 2)  # [B, H, N, D]
        a_src = (h * self.att_src[None, :, None, :]).sum(-1)  # [B, H, N]
        a_dst = (h * self.att_dst[None, :, None, :]).sum(-1)
        e = a_dst.unsqueeze(-1) + a_src.unsqueeze(-2)  # e[b, h, i, j]: j sends to i
        e = F.leaky_relu(e + self.att_edge[None, :, None, None] * adj.unsqueeze(1), 0.2)
        e = torch.where(adj.unsqueeze(1) != 0, e, torch.full_like(e, _MASKED))
        alpha = self.attn_drop(torch.softmax(e, dim=-1))
        out = alpha @ h  # [B, H, N, D]
        if self.concat:
            out = out.transpose(1, 2).reshape(b, n, self.heads * self.out_dim)
        else:
            out = out.mean(dim=1)
        if self.res is not None:
            out = out + self.res(x)
        return out + self.bias


class GnnNet(nn.Module):
    """Standardise -> GAT (multi-head, concat) -> ELU -> GAT (1 head) -> ELU -> linear logit per node."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, n_features: int, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.drop = nn.Dropout(dropout)
        self.gat1 = DenseGATLayer(n_features, hidden, heads, concat=True, dropout=dropout)
        self.gat2 = DenseGATLayer(hidden * heads, hidden, 1, concat=False, dropout=dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Return logits ``[B, N]`` from node features ``[B, N, F]`` and adjacency ``[B, N, N]``."""
        z = self.drop((x - self.mean) / self.scale)
        z = self.drop(F.elu(self.gat1(z, adj)))
        z = F.elu(self.gat2(z, adj))
        return self.head(z).squeeze(-1)


@dataclass(frozen=True)
class GnnConfig:
    """Hyper-parameters and training settings of the GAT."""

    hidden: int = 16
    heads: int = 4
    dropout: float = 0.2
    lr: float = 5e-3
    weight_decay: float = 5e-4
    batch_size: int = 64
    max_epochs: int = 100
    patience: int = 10
    clip_norm: float = 1.0
    val_fraction: float = 0.2
    embargo: int = 1
    seed: int = 0
    num_threads: int = 1
    device: str | None = None
    log_dir: str | None = None

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.heads < 1:
            raise ValueError("hidden and heads must be at least 1")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 < self.val_fraction < 1.0:
            raise ValueError("dropout must be in [0, 1) and val_fraction in (0, 1)")


PREDICT_BATCH = 2048  # graphs per forward pass when predicting (bounds the activations' memory)


def _masked_bce(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over nodes where ``mask`` is True."""
    loss = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(y), reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1)


class GnnClassifier:
    """Train, predict, save and load the dense GAT on a long feature frame."""

    def __init__(self, features: list[str], config: GnnConfig | None = None,
                 graph: GraphConfig | None = None, symbols: tuple[str, ...] = ()) -> None:
        self.features = list(features)
        self.config = config or GnnConfig()
        self.graph = graph or GraphConfig()
        self.symbols = tuple(symbols)
        c = self.config
        self.net = GnnNet(len(self.features), c.hidden, c.heads, c.dropout)
        self.history: list[dict[str, float]] = []
        self.best_epoch = -1

    def fit(self, frame: pd.DataFrame, label: str = "label") -> GnnClassifier:
        """Fit on ``frame``; the last ``val_fraction`` of decision times drive early stopping."""
        c = self.config
        gs = build_graphs(frame, self.features, self.graph, self.symbols or None, label)
        self.symbols = gs.symbols
        mask_all = gs.present & ~np.isnan(gs.y)
        has = np.flatnonzero(mask_all.any(axis=1))
        fit_m, val_m = time_split(gs.times.asi8[has], c.val_fraction, c.embargo)
        fit_t, val_t = has[fit_m], has[val_m]
        mean, scale = fit_standardizer(gs.x[fit_t][gs.present[fit_t]])
        x, adj = torch.from_numpy(gs.x), torch.from_numpy(gs.adj)
        y, mask = torch.from_numpy(gs.y.astype(np.float32)), torch.from_numpy(mask_all.astype(np.float32))
        device = pick_device(c.device)
        log = MetricLog(c.log_dir)
        with seeded(c.seed, c.num_threads) as gen:
            net = GnnNet(len(self.features), c.hidden, c.heads, c.dropout)
            net.mean.copy_(torch.from_numpy(mean))
            net.scale.copy_(torch.from_numpy(scale))
            net.to(device)
            opt = torch.optim.Adam(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
            stop = EarlyStopping(c.patience)
            vt = torch.from_numpy(val_t)
            for epoch in range(c.max_epochs):
                net.train()
                perm = torch.from_numpy(fit_t)[torch.randperm(len(fit_t), generator=gen)]
                total = 0.0
                for i in range(0, len(perm), c.batch_size):
                    t = perm[i:i + c.batch_size]
                    opt.zero_grad()
                    loss = _masked_bce(net(x[t].to(device), adj[t].to(device)),
                                       y[t].to(device), mask[t].to(device))
                    loss.backward()
                    nn.utils.clip_grad_norm_(net.parameters(), c.clip_norm)
                    opt.step()
                    total += loss.item() * len(t)
                net.eval()
                with torch.no_grad():
                    val_loss = _masked_bce(net(x[vt].to(device), adj[vt].to(device)),
                                           y[vt].to(device), mask[vt].to(device)).item()
                rec = {"epoch": epoch, "train_loss": total / len(fit_t), "val_loss": val_loss}
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

    def graphs(self, frame: pd.DataFrame, label: str | None = None) -> GraphSet:
        """Build the model's graphs (its symbols, features and graph settings) from ``frame``."""
        return build_graphs(frame, self.features, self.graph, self.symbols or None, label)

    def predict_graphs(self, x: np.ndarray, adj: np.ndarray, batch: int = PREDICT_BATCH) -> np.ndarray:
        """Return P(up) ``[T, N]`` for node features ``[T, N, F]`` and adjacency ``[T, N, N]``.

        Graphs go through the network ``batch`` at a time: every graph is scored on its own, and
        the activations of all of a history's graphs at once (about 430 MB for the five assets'
        37k hourly graphs) set the peak memory of ``training.train gnn`` otherwise.
        """
        self.net.eval()
        out = np.empty(x.shape[:2], np.float64)
        with torch.no_grad():
            for i in range(0, len(x), batch):
                logits = self.net(torch.as_tensor(x[i:i + batch], dtype=torch.float32),
                                  torch.as_tensor(adj[i:i + batch], dtype=torch.float32))
                out[i:i + batch] = torch.sigmoid(logits).double().numpy()
        return out

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Return P(up) per row of ``frame`` (NaN before the first full correlation window)."""
        gs = self.graphs(frame)
        rows = to_rows(gs, self.predict_graphs(gs.x, gs.adj))
        keys = frame[["symbol", "event_timestamp"]].assign(
            event_timestamp=pd.to_datetime(frame["event_timestamp"], utc=True))
        return keys.merge(rows, on=["symbol", "event_timestamp"], how="left")["proba"].to_numpy()

    def save(self, path: str | Path) -> None:
        """Write weights, standardisation, features, symbols and configs to ``path``."""
        torch.save({"features": self.features, "symbols": list(self.symbols),
                    "config": asdict(self.config), "graph": asdict(self.graph),
                    "state_dict": self.net.state_dict(), "best_epoch": self.best_epoch}, path)

    @classmethod
    def load(cls, path: str | Path) -> GnnClassifier:
        """Read a model written by :meth:`save`."""
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = cls(blob["features"], GnnConfig(**blob["config"]), GraphConfig(**blob["graph"]),
                    tuple(blob["symbols"]))
        model.net.load_state_dict(blob["state_dict"])
        model.net.eval()
        model.best_epoch = int(blob["best_epoch"])
        return model
