"""Export the LSTM (streaming step and sequence) and the GAT to ONNX, accepted only on parity.

Exporter: torch 2.13's default ``torch.onnx.export`` is the dynamo exporter, which
needs ``onnxscript`` (not installed here); the TorchScript exporter (``dynamo=False``,
opset 17) handles ``nn.LSTM`` (as ONNX ``LSTM`` ops) and the dense GAT, with dynamic
batch axes (and a dynamic time axis for the LSTM sequence graph).  Every graph ends in a sigmoid, so its outputs are probabilities, and the
feature standardisation is inside the graph (the networks' ``mean``/``scale``
buffers become constants), so the graphs take raw features in manifest order.

Acceptance: onnxruntime (single thread, CPU) must reproduce the native outputs on
held-out inputs within ``tolerance`` (default 1e-5 absolute) on every output, else
:class:`ExportRejected` names the largest difference.  The measured maximum is
returned with the bytes for the registry to record.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from training.export import TOLERANCE, ExportRejected, OnnxExport
from training.models.gnn import GnnClassifier, GnnNet
from training.models.lstm import LstmClassifier, LstmNet

OPSET = 17


class _StepProb(nn.Module):
    def __init__(self, net: LstmNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logit, h2, c2 = self.net.step(x, h, c)
        return torch.sigmoid(logit), h2, c2


class _SeqProb(nn.Module):
    def __init__(self, net: LstmNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, h2, c2 = self.net(x, h, c)
        return torch.sigmoid(logits), h2, c2


class _GnnProb(nn.Module):
    def __init__(self, net: GnnNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x, adj))


def session(onnx_bytes: bytes) -> ort.InferenceSession:
    """Open a single-threaded CPU onnxruntime session on ``onnx_bytes``."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], inputs: list[str],
            outputs: list[str], axes: dict[str, dict[int, str]]) -> bytes:
    buf = io.BytesIO()
    module.eval()
    with warnings.catch_warnings():  # the TorchScript exporter warns that it is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf,  # type: ignore[arg-type]  # BytesIO is accepted
                          dynamo=False, opset_version=OPSET,
                          input_names=inputs, output_names=outputs, dynamic_axes=axes)
    return buf.getvalue()


def _accept(diff: float, tolerance: float, what: str) -> None:
    if not diff <= tolerance:  # also rejects NaN
        raise ExportRejected(f"{what}: onnxruntime differs from torch by max |diff| = {diff:.3g} "
                             f"> tolerance {tolerance:.1g}")


def export_lstm_step(model: LstmClassifier | LstmNet, held_out: np.ndarray,
                     tolerance: float = TOLERANCE) -> OnnxExport:
    """Export the streaming LSTM step: ``x [batch, F], h, c [layers, batch, hidden]`` -> ``prob, h_out, c_out``.

    Parity is checked along sequences: from a zero state, every row of ``held_out``
    ``[B, T, F]`` is fed through torch and through onnxruntime, each carrying its own
    state, and prob, h and c are compared at every step (so drift would show).
    """
    net = model.net if isinstance(model, LstmClassifier) else model
    mod = _StepProb(net).eval()
    seq = torch.as_tensor(held_out, dtype=torch.float32)
    h, c = net.zero_state(seq.shape[0])
    names_in, names_out = ["x", "h", "c"], ["prob", "h_out", "c_out"]
    axes = {"x": {0: "batch"}, "h": {1: "batch"}, "c": {1: "batch"}, "prob": {0: "batch"},
            "h_out": {1: "batch"}, "c_out": {1: "batch"}}
    blob = _export(mod, (seq[:2, 0], h[:, :2], c[:, :2]), names_in, names_out, axes)
    sess = session(blob)
    hn, cn = h.numpy(), c.numpy()
    diff = 0.0
    with torch.no_grad():
        for t in range(seq.shape[1]):
            p, h, c = mod(seq[:, t], h, c)
            po, hn, cn = sess.run(names_out, {"x": seq[:, t].numpy(), "h": hn, "c": cn})
            diff = max(diff, *(float(np.max(np.abs(a - b.numpy())))
                               for a, b in ((po, p), (hn, h), (cn, c))))
    _accept(diff, tolerance, "lstm step")
    return OnnxExport(blob, tuple(names_in), tuple(names_out), diff, tolerance,
                      seq.shape[0] * seq.shape[1], OPSET)


def export_lstm_seq(model: LstmClassifier | LstmNet, held_out: np.ndarray,
                    tolerance: float = TOLERANCE) -> OnnxExport:
    """Export the LSTM over a sequence: ``x [batch, T, F], h, c [layers, batch, hidden]`` -> ``prob [batch, T], h_out, c_out``.

    Batch and time are dynamic axes.  Parity is checked on ``held_out`` ``[B, T, F]`` in
    two calls that carry the state: the first half of the rows from a zero state, then
    the second half from the state the first call returned (so a wrong carry would show),
    comparing prob, h and c of both calls.
    """
    net = model.net if isinstance(model, LstmClassifier) else model
    mod = _SeqProb(net).eval()
    seq = torch.as_tensor(held_out, dtype=torch.float32)
    h, c = net.zero_state(seq.shape[0])
    names_in, names_out = ["x", "h", "c"], ["prob", "h_out", "c_out"]
    axes = {"x": {0: "batch", 1: "time"}, "h": {1: "batch"}, "c": {1: "batch"}, "prob": {0: "batch", 1: "time"},
            "h_out": {1: "batch"}, "c_out": {1: "batch"}}
    blob = _export(mod, (seq[:2, :3], h[:, :2], c[:, :2]), names_in, names_out, axes)
    sess = session(blob)
    hn, cn = h.numpy(), c.numpy()
    half = max(1, seq.shape[1] // 2)
    diff = 0.0
    with torch.no_grad():
        for part in (seq[:, :half], seq[:, half:]):
            if part.shape[1] == 0:
                continue
            p, h, c = mod(part, h, c)
            po, hn, cn = sess.run(names_out, {"x": part.numpy(), "h": hn, "c": cn})
            diff = max(diff, *(float(np.max(np.abs(a - b.numpy())))
                               for a, b in ((po, p), (hn, h), (cn, c))))
    _accept(diff, tolerance, "lstm seq")
    return OnnxExport(blob, tuple(names_in), tuple(names_out), diff, tolerance,
                      seq.shape[0] * seq.shape[1], OPSET)


def export_gnn(model: GnnClassifier | GnnNet, x: np.ndarray, adj: np.ndarray,
               tolerance: float = TOLERANCE) -> OnnxExport:
    """Export the GAT: ``x [batch, N, F]`` (raw features), ``adj [batch, N, N]`` -> ``prob [batch, N]``.

    The node axis is dynamic too: the scorer runs the same graph on clusters of a large
    universe (``scoring.gnn_cluster_size``), so parity is checked on the first half of
    the nodes as well as on all of them.
    """
    net = model.net if isinstance(model, GnnClassifier) else model
    mod = _GnnProb(net).eval()
    xt = torch.as_tensor(x, dtype=torch.float32)
    at = torch.as_tensor(adj, dtype=torch.float32)
    axes = {"x": {0: "batch", 1: "nodes"}, "adj": {0: "batch", 1: "nodes", 2: "nodes"},
            "prob": {0: "batch", 1: "nodes"}}
    blob = _export(mod, (xt[:2], at[:2]), ["x", "adj"], ["prob"], axes)
    sess, diff = session(blob), 0.0
    for m in sorted({max(1, xt.shape[1] // 2), xt.shape[1]}):
        xs, adjs = xt[:, :m].contiguous(), at[:, :m, :m].contiguous()
        with torch.no_grad():
            native = mod(xs, adjs).numpy()
        got = sess.run(["prob"], {"x": xs.numpy(), "adj": adjs.numpy()})[0]
        diff = max(diff, float(np.max(np.abs(got - native))))
    _accept(diff, tolerance, "gnn")
    return OnnxExport(blob, ("x", "adj"), ("prob",), diff, tolerance, len(xt), OPSET)
