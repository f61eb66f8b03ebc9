"""Export of trained models to ONNX with a parity check against onnxruntime.

Torch-free: :class:`ExportRejected` and :class:`OnnxExport` live here so any
exporter (and the registry) can share them without importing a training library.
"""

from __future__ import annotations

from dataclasses import dataclass

TOLERANCE = 1e-5


class ExportRejected(RuntimeError):
    """onnxruntime does not reproduce the native model within the tolerance."""


@dataclass(frozen=True)
class OnnxExport:
    """An accepted export: the ONNX bytes, its I/O names and the parity measured on held-out rows."""

    onnx: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    max_abs_diff: float
    tolerance: float
    checked_rows: int
    opset: int
