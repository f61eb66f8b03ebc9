"""Export a binary LightGBM booster to ONNX, accepted only on parity with the native model.

Converter: ``onnxmltools.convert_lightgbm`` (zipmap off; ``target_opset=15``,
the highest onnxmltools 1.16 accepts; onnxruntime 1.32 runs up to opset 23).
The converter's (label, probabilities) outputs are replaced by one output
``prob`` = P(up), float32 ``[N]``; the input ``input [N, F]`` is in manifest
feature order.

Precision.  The converter emits float32 thresholds and a float32 input.  On the
real 1h features that breaks parity badly (max |diff| 0.07 on 20% of rows): the
calendar features (``hour_sin``, ``dow_cos``, ...) take values that differ only by
float64 rounding noise (sin(pi/4) vs sin(3pi/4) = 0.7071067811865475 vs ...476),
LightGBM splits between them, and float32 merges them, so the cast alone moves
rows to other leaves.  Adjusting float32 thresholds cannot separate values that
float32 itself cannot tell apart, so by default (``precision="double"``) the
graph takes float64 input and the ``TreeEnsembleClassifier`` (ai.onnx.ml opset 3)
gets the booster's exact float64 thresholds as ``nodes_values_as_tensor``; only
the leaf sums stay float32 (measured max |diff| ~7e-8).  ``precision="float"``
keeps the converter's float32 graph; its parity is measured after the float32
cast the scorer would do, and a rejection reports how much the cast alone
explains.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from training.export import TOLERANCE, ExportRejected, OnnxExport
from training.models.lightgbm_model import LightGBMModel

OPSET = 15
Precision = Literal["double", "float"]
INPUT, OUTPUT = "input", "prob"


def _session(onnx_bytes: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


def _convert(model: LightGBMModel, opset: int) -> tuple[onnx.ModelProto, np.ndarray]:
    """Run the converter and capture its float64 thresholds (before it stores them as float32)."""
    import onnxmltools.convert.lightgbm.operator_converters.LightGbm as lgb_conv
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    captured: list[dict] = []
    default_attrs = lgb_conv.get_default_tree_classifier_attribute_pairs

    def capture() -> dict:
        attrs = default_attrs()
        captured.append(attrs)
        return attrs

    lgb_conv.get_default_tree_classifier_attribute_pairs = capture
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proto = convert_lightgbm(model._require(), name="lightgbm",
                                     initial_types=[(INPUT, FloatTensorType([None, len(model.features)]))],
                                     zipmap=False, target_opset=opset)
    finally:
        lgb_conv.get_default_tree_classifier_attribute_pairs = default_attrs
    if len(captured) != 1:
        raise ExportRejected(f"converter internals changed: captured {len(captured)} attribute sets")
    return proto, np.asarray(captured[0]["nodes_values"], np.float64)


def _to_double(proto: onnx.ModelProto, thresholds: np.ndarray) -> None:
    """Make the tree ensemble take float64 input and compare with the exact float64 thresholds."""
    node = next(n for n in proto.graph.node if n.op_type == "TreeEnsembleClassifier")
    att = next(a for a in node.attribute if a.name == "nodes_values")
    if not np.array_equal(np.asarray(att.floats, np.float32), thresholds.astype(np.float32)):
        raise ExportRejected("captured thresholds do not match the converter's float32 thresholds")
    node.attribute.remove(att)
    node.attribute.append(helper.make_attribute("nodes_values_as_tensor",
                                                numpy_helper.from_array(thresholds, "nodes_values")))
    for imp in proto.opset_import:
        if imp.domain == "ai.onnx.ml":
            imp.version = max(imp.version, 3)  # nodes_values_as_tensor needs ai.onnx.ml 3
    proto.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE


def to_onnx(model: LightGBMModel, opset: int = OPSET, precision: Precision = "double") -> bytes:
    """Convert the booster; the graph maps ``input [N, F]`` (float64 or float32) to ``prob [N]`` (P(up))."""
    if model.config.objective != "binary":
        raise NotImplementedError("ONNX export supports the binary objective only")
    proto, thresholds = _convert(model, opset)
    if precision == "double":
        _to_double(proto, thresholds)
    g = proto.graph
    probs = next(o.name for o in g.output if o.type.tensor_type.elem_type == TensorProto.FLOAT)
    g.initializer.append(helper.make_tensor("class_up", TensorProto.INT64, [], [1]))
    g.node.append(helper.make_node("Gather", [probs, "class_up"], [OUTPUT], axis=1, name="p_up"))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N"]))
    proto.doc_string = f"LightGBM P(up); features: {','.join(model.features)}"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def onnx_predict(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Run the exported graph on rows (cast to the graph's input type) and return P(up) as float64."""
    sess = _session(onnx_bytes)
    dtype = np.float64 if sess.get_inputs()[0].type == "tensor(double)" else np.float32
    return sess.run([OUTPUT], {INPUT: np.asarray(x, dtype)})[0].astype(np.float64)


def parity_report(model: LightGBMModel, onnx_bytes: bytes, held_out: np.ndarray) -> dict[str, float]:
    """Return max |native - onnx| and how much of it the float32 cast alone explains."""
    x64 = np.asarray(held_out, np.float64)
    native = model.predict_proba(x64)
    native_on_cast = model.predict_proba(x64.astype(np.float32).astype(np.float64))
    ort_p = onnx_predict(onnx_bytes, x64)
    diff = np.abs(native - ort_p)
    return {"max_abs_diff": float(diff.max(initial=0.0)),
            "max_abs_diff_cast_consistent": float(np.abs(native_on_cast - ort_p).max(initial=0.0)),
            "max_abs_diff_cast_only": float(np.abs(native - native_on_cast).max(initial=0.0)),
            "rows_over_1e-5": float((diff > 1e-5).sum()), "rows": float(len(x64))}


def export_lightgbm(model: LightGBMModel, held_out: np.ndarray, tolerance: float = TOLERANCE,
                    opset: int = OPSET, precision: Precision = "double") -> OnnxExport:
    """Export and accept only if onnxruntime reproduces ``predict_proba`` on ``held_out`` within ``tolerance``.

    Args:
        model: a trained binary :class:`LightGBMModel`.
        held_out: rows not used for training, float64 ``[N, F]`` in the model's feature order.
        tolerance: maximum absolute difference of P(up).
        opset: ONNX opset for the converter.
        precision: ``"double"`` (float64 input, exact thresholds) or ``"float"`` (converter as is).

    Raises:
        ExportRejected: the largest difference exceeds ``tolerance`` (message gives the figures).
    """
    if len(held_out) == 0:
        raise ValueError("parity needs at least one held-out row")
    onnx_bytes = to_onnx(model, opset, precision)
    rep = parity_report(model, onnx_bytes, held_out)
    if not rep["max_abs_diff"] <= tolerance:
        raise ExportRejected(
            f"lightgbm: onnxruntime differs from the native model by max |diff| = {rep['max_abs_diff']:.3g} "
            f"> {tolerance:g} on {int(rep['rows_over_1e-5'])} of {int(rep['rows'])} held-out rows; "
            f"float32 cast alone: {rep['max_abs_diff_cast_only']:.3g}, converter on cast rows: "
            f"{rep['max_abs_diff_cast_consistent']:.3g}")
    return OnnxExport(onnx_bytes, (INPUT,), (OUTPUT,), rep["max_abs_diff"], tolerance, len(held_out), opset)
