"""The ensemble as one ONNX graph, accepted only on parity with ``training/models/ensemble.py``.

Graph (float64 throughout, opset 17)::

    probs [N, M] double  ->  prob [N] double, confidence [N] double, signal [N] int64

The base weights are baked in as a constant; the confidence weighting, the
left-out NaN members, the fallback to base weights and the signal threshold are
all computed in the graph, so the scorer only stacks member probabilities.
Acceptance: on held-out rows, ``prob`` within ``tolerance`` (default 1e-5
absolute, NaN where the native is NaN) and ``signal`` exactly equal.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from training.export import TOLERANCE, ExportRejected, OnnxExport
from training.models.ensemble import EPS, Ensemble

OPSET = 17
INPUT = "probs"
OUTPUTS = ("prob", "confidence", "signal", "prob_raw")  # prob: calibrated; prob_raw: before the map


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def to_onnx(ensemble: Ensemble) -> bytes:
    """Build the ensemble graph for ``ensemble``'s members, weights, method and threshold."""
    cfg = ensemble.config
    m = len(cfg.members)
    n = helper.make_node
    init = [_const("w", ensemble.weights.reshape(1, m)), _const("zero", np.array(0.0)),
            _const("half", np.array(0.5)), _const("two", np.array(2.0)), _const("one", np.array(1.0)),
            _const("nan", np.array(np.nan)), _const("thr", np.array(cfg.threshold)),
            _const("axes", np.array([1], np.int64)), _const("i_one", np.array(1, np.int64)),
            _const("i_zero", np.array(0, np.int64)), _const("i_neg", np.array(-1, np.int64))]
    nodes = [
        n("IsNaN", [INPUT], ["isnan"]),
        n("Where", ["isnan", "zero", INPUT], ["pz"]),
        n("Where", ["isnan", "zero", "w"], ["base"]),  # [N, M] base weights of usable members
    ]
    if cfg.method == "confidence":
        nodes += [n("Sub", ["pz", "half"], ["pc"]), n("Abs", ["pc"], ["pa"]), n("Mul", ["pa", "two"], ["mconf"]),
                  n("Mul", ["base", "mconf"], ["wc"]),
                  n("ReduceSum", ["wc", "axes"], ["wcs"], keepdims=1),
                  n("Greater", ["wcs", "zero"], ["wc_ok"]),
                  n("Where", ["wc_ok", "wc", "base"], ["wrow"])]
    else:
        nodes.append(n("Identity", ["base"], ["wrow"]))
    nodes += [
        n("ReduceSum", ["wrow", "axes"], ["s"], keepdims=0),
        n("Mul", ["wrow", "pz"], ["wp"]),
        n("ReduceSum", ["wp", "axes"], ["num"], keepdims=0),
        n("Greater", ["s", "zero"], ["s_ok"]),
        n("Where", ["s_ok", "s", "one"], ["s_safe"]),
        n("Div", ["num", "s_safe"], ["ratio"]),
        n("Where", ["s_ok", "ratio", "nan"], [OUTPUTS[3]]),
    ]
    a, b = cfg.calibration
    if (a, b) == (1.0, 0.0):
        nodes.append(n("Identity", [OUTPUTS[3]], [OUTPUTS[0]]))
    else:  # Platt's map on the logit of the clipped probability; NaN rows stay NaN
        init += [_const("eps", np.array(EPS)), _const("one_eps", np.array(1.0 - EPS)),
                 _const("cal_a", np.array(a)), _const("cal_b", np.array(b))]
        nodes += [n("IsNaN", [OUTPUTS[3]], ["raw_nan"]), n("Where", ["raw_nan", "half", OUTPUTS[3]], ["raw_z"]),
                  n("Max", ["raw_z", "eps"], ["q_lo"]), n("Min", ["q_lo", "one_eps"], ["q"]),
                  n("Sub", ["one", "q"], ["q1"]), n("Div", ["q", "q1"], ["odds"]), n("Log", ["odds"], ["logit"]),
                  n("Mul", ["logit", "cal_a"], ["za"]), n("Add", ["za", "cal_b"], ["z"]),
                  n("Sigmoid", ["z"], ["cal"]), n("Where", ["raw_nan", "nan", "cal"], [OUTPUTS[0]])]
    nodes += [
        n("Sub", [OUTPUTS[0], "half"], ["d"]), n("Abs", ["d"], ["ad"]),
        n("Mul", ["ad", "two"], [OUTPUTS[1]]),
        n("Greater", [OUTPUTS[0], "half"], ["up"]),
        n("Where", ["up", "i_one", "i_zero"], ["dir"]),
        n("GreaterOrEqual", [OUTPUTS[1], "thr"], ["sure"]),  # False for NaN -> no signal
        n("Where", ["sure", "dir", "i_neg"], [OUTPUTS[2]]),
    ]
    graph = helper.make_graph(
        nodes, "ensemble",
        [helper.make_tensor_value_info(INPUT, TensorProto.DOUBLE, ["N", m])],
        [helper.make_tensor_value_info(OUTPUTS[0], TensorProto.DOUBLE, ["N"]),
         helper.make_tensor_value_info(OUTPUTS[1], TensorProto.DOUBLE, ["N"]),
         helper.make_tensor_value_info(OUTPUTS[2], TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info(OUTPUTS[3], TensorProto.DOUBLE, ["N"])], init)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="cryptostream-ensemble")
    proto.doc_string = (f"ensemble {cfg.method} of {','.join(cfg.members)}; weights {list(cfg.weights)}; "
                        f"calibration {list(cfg.calibration)}")
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def onnx_predict(onnx_bytes: bytes, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the graph on member probabilities ``[N, M]``; return (prob, confidence, signal)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    prob, conf, sig = sess.run(list(OUTPUTS[:3]), {INPUT: np.asarray(probs, np.float64)})
    return prob, conf, sig


def export_ensemble(ensemble: Ensemble, held_out: np.ndarray, tolerance: float = TOLERANCE) -> OnnxExport:
    """Export and accept only on parity with :meth:`Ensemble.predict` on ``held_out`` member probabilities.

    Raises:
        ExportRejected: a probability differs by more than ``tolerance``, NaN rows differ, or a signal differs.
    """
    probs = np.asarray(held_out, np.float64)
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError("parity needs held-out member probabilities [N > 0, M]")
    blob = to_onnx(ensemble)
    native_p, _, native_s = ensemble.predict(probs)
    got_p, _, got_s = onnx_predict(blob, probs)
    nan_n, nan_o = np.isnan(native_p), np.isnan(got_p)
    if (nan_n != nan_o).any():
        raise ExportRejected(f"ensemble: NaN rows differ on {int((nan_n != nan_o).sum())} rows")
    diff = float(np.max(np.abs(got_p[~nan_n] - native_p[~nan_n]), initial=0.0))
    if not diff <= tolerance:
        raise ExportRejected(f"ensemble: onnxruntime differs by max |diff| = {diff:.3g} > {tolerance:g}")
    if (got_s != native_s).any():
        raise ExportRejected(f"ensemble: signals differ on {int((got_s != native_s).sum())} of {len(probs)} rows")
    return OnnxExport(blob, (INPUT,), OUTPUTS, diff, tolerance, len(probs), OPSET)
