"""Model registry on disk: ``<root>/<family>/<version>/`` with ONNX files and ``manifest.json``.

Layout::

    <root>/<family>/<version>/manifest.json
    <root>/<family>/<version>/<file>...        # e.g. model.onnx, native model, config
    <root>/<family>/latest.<timeframe>          # one line: the version runs of that timeframe load
    <root>/<family>/latest                      # one line: the last promotion of any timeframe (older readers)
    <root>/events.jsonl                         # promotions, rollbacks, retraining steps (inference.promotions)

A version is of one timeframe (its feature service's, ``lightgbm_1h_v1`` -> ``1h``) and names its
symbol universe; a run of one timeframe loads only that timeframe's versions
(:func:`inference.manifest.resolve_version_dir`).  ``python -m training.registry`` lists,
shows, promotes, rolls back and verifies them.

The default root is ``<settings.data_dir>/registry`` (:func:`default_root`).
A version is ``YYYYmmddTHHMMSSffffffZ-<config_hash[:8]>`` in UTC; versions of a
family sort lexicographically in creation order and are strictly increasing
(a clash or a clock step back bumps the timestamp by a microsecond).  A version
directory is written under a hidden temporary name and renamed into place, and
``latest`` is replaced atomically (write + ``os.replace``), so readers never see
a half-written model.

``data_hash`` (:func:`frame_hash`) is sha256 over a canonical form of the
training frame: rows sorted by (event_timestamp, symbol); then for each column in
the order ``symbol, event_timestamp, label, fwd_ret, *features`` its name, a NUL,
and its values: symbols as UTF-8 joined by newlines, timestamps as int64 ns since
the epoch (UTC), label and features as little-endian float64.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from inference.manifest import (
    LATEST_FILE,
    MANIFEST_FILE,
    Manifest,
    ManifestError,
    Parity,
    TensorSpec,
    config_hash,
    feature_hash,
    read_manifest,
    resolve_version_dir,
    sha256_hex,
    verify,
)
from inference.promotions import promote

__all__ = ["Manifest", "ManifestError", "Parity", "TensorSpec", "default_root", "frame_hash", "io_from_onnx",
           "list_versions", "load_manifest", "save_model", "service_version", "verify"]

_TS_FMT = "%Y%m%dT%H%M%S%fZ"


def default_root(data_dir: str | Path) -> Path:
    """Return the default registry root, ``<data_dir>/registry``."""
    return Path(data_dir) / "registry"


def service_version(service: str) -> str:
    """Return the version suffix of a feature service name (``lightgbm_1h_v1`` -> ``v1``)."""
    tail = service.rsplit("_", 1)[-1]
    if not (tail.startswith("v") and tail[1:].isdigit()):
        raise ValueError(f"feature service {service!r} has no _v<N> version suffix")
    return tail


def frame_hash(frame: pd.DataFrame, features: Sequence[str]) -> str:
    """Return the sha256 of the canonical form of a training frame (see module docstring)."""
    df = frame.sort_values(["event_timestamp", "symbol"], kind="mergesort")
    parts: list[bytes] = []
    for col in ("symbol", "event_timestamp", "label", "fwd_ret", *features):
        if col not in df.columns:
            continue
        parts.append(col.encode() + b"\0")
        s = df[col]
        if col == "symbol":
            parts.append("\n".join(map(str, s)).encode())
        elif col == "event_timestamp":
            ts = pd.to_datetime(s, utc=True)
            parts.append((ts - pd.Timestamp(0, tz="UTC")).to_numpy("timedelta64[ns]").astype("<i8").tobytes())
        else:
            parts.append(s.to_numpy(dtype="<f8").tobytes())
    return sha256_hex(b"".join(parts))


def io_from_onnx(onnx_bytes: bytes) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Read the input and output names, shapes and element types of an ONNX graph."""
    import onnx
    from onnx import helper

    graph = onnx.load_model_from_string(onnx_bytes).graph
    init = {i.name for i in graph.initializer}

    def spec(v: Any) -> TensorSpec:
        t = v.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        return TensorSpec(v.name, shape, helper.tensor_dtype_to_np_dtype(t.elem_type).name)

    return (tuple(spec(v) for v in graph.input if v.name not in init),
            tuple(spec(v) for v in graph.output))


def list_versions(root: str | Path, family: str) -> list[str]:
    """Return the versions of a family, oldest first."""
    fam = Path(root) / family
    if not fam.is_dir():
        return []
    return sorted(p.name for p in fam.iterdir() if p.is_dir() and not p.name.startswith("."))


def _next_version(root: Path, family: str, now: datetime, chash: str) -> str:
    stamp = now.astimezone(UTC)
    existing = list_versions(root, family)
    if existing:
        last = datetime.strptime(existing[-1].split("-")[0], _TS_FMT).replace(tzinfo=UTC)
        if stamp <= last:
            stamp = last + timedelta(microseconds=1)
    return f"{stamp.strftime(_TS_FMT)}-{chash[:8]}"


def _utc_iso(t: datetime | pd.Timestamp | str) -> str:
    ts = pd.Timestamp(t)
    if ts.tzinfo is None:
        raise ValueError(f"training window bound {t!r} must be timezone-aware (UTC)")
    return ts.tz_convert("UTC").isoformat()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_model(root: str | Path, family: str, *, files: Mapping[str, bytes], feature_service: str,
               features: Sequence[str], train_start: datetime | pd.Timestamp | str,
               train_end: datetime | pd.Timestamp | str, data_hash: str, seeds: Mapping[str, int],
               config: Mapping[str, Any], metrics: Mapping[str, Any], parity: Parity,
               feature_service_version: str | None = None,
               inputs: Sequence[TensorSpec] | None = None, outputs: Sequence[TensorSpec] | None = None,
               extra: Mapping[str, Any] | None = None, set_latest: bool = True,
               symbols: Sequence[str] | None = None, promoted_by: str | None = None,
               now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Manifest:
    """Write a new version of a model family and (by default) point ``latest`` at it.

    Args:
        root: registry root (e.g. :func:`default_root` of the settings' data dir).
        family: model family, e.g. ``"lightgbm"``, ``"lstm"``, ``"gnn"``, ``"ensemble"``.
        files: file name -> bytes; at least one ``*.onnx``.  Names must be plain file names.
        feature_service: Feast feature service the model was trained on (and must be fed).
        features: ordered feature names the graph expects, in the service's order.
        train_start: first decision time of the training data (UTC).
        train_end: last decision time of the training data (UTC).
        data_hash: :func:`frame_hash` of the training frame.
        seeds: every seed used, by name.
        config: the model's effective config as plain JSON-able data.
        metrics: ``{"folds": [...], "mean": {...}}`` from walk-forward validation.
        parity: native vs onnxruntime agreement on held-out rows.
        feature_service_version: defaults to the service name's ``_v<N>`` suffix.
        inputs: graph inputs; default read from the first ``*.onnx`` in ``files``.
        outputs: graph outputs; default read from the first ``*.onnx`` in ``files``.
        extra: family-specific data (LSTM window/hidden size, GNN symbol order, ...).
        set_latest: promote the version: point its timeframe's ``latest.<tf>`` (and ``latest``)
            at it, logged as a promotion by ``promoted_by`` (default: the running program).
        symbols: the symbol universe trained on (default: ``extra["symbols"]``, else none recorded).
        promoted_by: who promotes it (``set_latest``), for the event log.
        now: clock, for tests.

    Returns:
        The manifest written.
    """
    onnx_files = [n for n in files if n.endswith(".onnx")]
    if not onnx_files:
        raise ValueError("files must contain at least one .onnx file")
    for name in files:
        if name in (MANIFEST_FILE, LATEST_FILE) or Path(name).name != name or name.startswith("."):
            raise ValueError(f"bad file name {name!r}")
    if inputs is None or outputs is None:
        ins, outs = io_from_onnx(files[onnx_files[0]])
        inputs = ins if inputs is None else inputs
        outputs = outs if outputs is None else outputs
    root = Path(root)
    chash = config_hash(config)
    version = _next_version(root, family, now(), chash)
    manifest = Manifest(
        family=family, version=version, created_at=now().astimezone(UTC).isoformat(),
        feature_service=feature_service,
        feature_service_version=feature_service_version or service_version(feature_service),
        features=tuple(features), feature_hash=feature_hash(features),
        inputs=tuple(inputs), outputs=tuple(outputs),
        train_start=_utc_iso(train_start), train_end=_utc_iso(train_end),
        data_hash=data_hash, seeds={k: int(v) for k, v in seeds.items()}, config=dict(config),
        config_hash=chash, metrics=dict(metrics), parity=parity,
        files={n: sha256_hex(b) for n, b in sorted(files.items())}, extra=dict(extra or {}),
        symbols=tuple(str(x) for x in (symbols if symbols is not None else (extra or {}).get("symbols", ()))))
    fam = root / family
    fam.mkdir(parents=True, exist_ok=True)
    tmp = fam / f".tmp-{version}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    (tmp / MANIFEST_FILE).write_text(manifest.to_json())
    os.replace(tmp, fam / version)
    if set_latest:
        tf = manifest.timeframe
        if tf is None:  # a service name without a timeframe: only the one-line pointer
            _write_atomic(fam / LATEST_FILE, f"{version}\n".encode())
        else:
            promote(root, tf, {family: version}, promoted_by or _program(), "registered",
                    now=lambda: now().astimezone(UTC).isoformat())
    return read_manifest(fam / version)  # round-trip: what readers will see


def _program() -> str:
    """Return the running command, e.g. ``python -m training.train`` (``sys.argv[0]`` is the module's path)."""
    path = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    parts = path.with_suffix("").parts
    if "training" in parts:
        mod = ".".join(parts[parts.index("training"):]).removesuffix(".__main__")
        return f"python -m {mod}"
    return path.name


def load_manifest(root: str | Path, family: str, version: str = "latest", check: bool = True,
                  timeframe: str | None = None) -> Manifest:
    """Load a family's manifest (``latest`` of ``timeframe`` by default), re-hashing its files when ``check``."""
    d = resolve_version_dir(root, family, version, timeframe=timeframe)
    return verify(d) if check else read_manifest(d)


def version_dir(root: str | Path, family: str, version: str = "latest", timeframe: str | None = None) -> Path:
    """Return the directory of a version (``latest`` of ``timeframe`` followed)."""
    return resolve_version_dir(root, family, version, timeframe=timeframe)
