"""Run an exported RL policy with onnxruntime only (no torch, stable-baselines3 or gymnasium).

``PolicyRunner.from_registry(root, "rl_tactical")`` verifies the version's file
hashes, opens ``policy.onnx`` in a single-threaded session and exposes the market
feature names the observation is built from (``features``).  :meth:`PolicyRunner.act`
returns post-processed actions ``[n, k]``: clipped / unscaled for Box action
spaces, the argmax (int64) for Discrete ones; the post-processing is inside the
graph (``training/rl/export.py``), so nothing here can drift from training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from inference.manifest import Manifest, ManifestError, resolve_version_dir, verify
from inference.scorer import FeatureMismatch, open_session

POLICY_FILE = "policy.onnx"
POLICY_FAMILIES = ("rl_strategic", "rl_tactical", "rl_execution")


@dataclass
class PolicyRunner:
    """A registered policy: its manifest, its market feature names and an onnxruntime session."""

    manifest: Manifest
    session: ort.InferenceSession
    features: tuple[str, ...]
    observation_size: int

    def __post_init__(self) -> None:
        self._input = self.session.get_inputs()[0].name
        self._outputs = [self.session.get_outputs()[0].name]
        # batch size -> (binding, input buffer, output buffer): the scoring step acts on the same few batch
        # sizes (its symbols) every bar; a bound run skips onnxruntime's per-call feed conversion (same kernels)
        self._bound: dict[int, tuple[Any, np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_registry(cls, root: str | Path, family: str, version: str = "latest",
                      allowed_features: Sequence[str] | None = None,
                      timeframe: str | None = None) -> PolicyRunner:
        """Load and verify a policy version.

        Args:
            root: registry root.
            family: ``rl_strategic``, ``rl_tactical`` or ``rl_execution``.
            version: version directory name, or ``latest``.
            allowed_features: when given, every manifest feature must be among them
                (the feature service the policy will be fed); else :class:`FeatureMismatch`.
            timeframe: the run's timeframe: a policy of another is refused.

        Raises:
            inference.manifest.ManifestError: no such version, or a file fails its hash.
            FeatureMismatch: the policy needs features outside ``allowed_features``.
            inference.manifest.TimeframeMismatch: the policy observes another timeframe's bars.
        """
        if family not in POLICY_FAMILIES:
            raise ValueError(f"family must be one of {POLICY_FAMILIES}, not {family!r}")
        d = resolve_version_dir(root, family, version, timeframe=timeframe)
        m = verify(d)
        if POLICY_FILE not in m.files:
            raise ManifestError(f"{family}/{m.version} has no {POLICY_FILE} (files: {sorted(m.files)})")
        if allowed_features is not None:
            missing = [f for f in m.features if f not in set(allowed_features)]
            if missing:
                raise FeatureMismatch(f"{family}/{m.version} needs features the feed lacks: {missing}")
        size = int(m.extra.get("observation_size", 0))
        return cls(m, open_session((d / POLICY_FILE).read_bytes()), tuple(m.features), size)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Return the policy's actions ``[n, k]`` for observations ``[n, observation_size]``."""
        x = obs if obs.dtype == np.float32 else np.asarray(obs, np.float32)
        if x.ndim != 2 or (self.observation_size and x.shape[1] != self.observation_size):
            raise ValueError(f"{self.manifest.family}: observations must be [n, {self.observation_size}], "
                             f"got shape {x.shape}")
        bound = self._bound.get(x.shape[0])
        if bound is None:
            out: np.ndarray = self.session.run(self._outputs, {self._input: x})[0]
            if len(self._bound) < 8:
                self._bind(x, out)
            return out
        io, x_in, y = bound
        np.copyto(x_in, x)
        self.session.run_with_iobinding(io)
        return y.copy()

    def bound(self, like: np.ndarray) -> tuple[np.ndarray, Callable[[], object], np.ndarray]:
        """Return ``(x, run, y)`` for batches shaped like ``like``: ``run()`` acts on ``x``, leaving the actions in ``y``.

        :meth:`act` without its per-call checks and copies, for a caller that acts once per bar
        time in a loop (the scoring step over a stretch of history): it writes the observations
        into ``x`` (float32 ``[n, d]``), calls ``run()`` and reads ``y`` before the next call.
        The same session run as :meth:`act`, so the same actions bit for bit.
        """
        if like.ndim != 2 or (self.observation_size and like.shape[1] != self.observation_size):
            raise ValueError(f"{self.manifest.family}: observations must be [n, {self.observation_size}], "
                             f"got shape {like.shape}")
        bound = self._bound.get(like.shape[0])
        if bound is None:
            x = np.zeros(like.shape, np.float32)
            self._bind(x, self.session.run(self._outputs, {self._input: x})[0])
            bound = self._bound.pop(like.shape[0]) if len(self._bound) > 8 else self._bound[like.shape[0]]
        io, x_in, y = bound
        # the pybind session's own run: InferenceSession.run_with_iobinding adds only WebGPU graph-capture
        # checks (a CPU session never captures), about 1.5 us per call in a loop of one call per bar time
        # (an onnxruntime without WebGPU has no such check: its public run calls the same inner run)
        inner, binding = getattr(self.session, "_sess", None), getattr(io, "_iobinding", None)
        capture = getattr(inner, "is_webgpu_graph_capture_enabled", None)
        if inner is not None and binding is not None and not (capture is not None and capture()):
            return x_in, partial(inner.run_with_iobinding, binding, None), y
        return x_in, partial(self.session.run_with_iobinding, io), y

    def _bind(self, x: np.ndarray, out: np.ndarray) -> None:
        """Keep an IO binding for batches shaped like ``x`` whose output is shaped like ``out``."""
        x_in, y = np.empty_like(x, order="C"), np.empty_like(out, order="C")
        io = self.session.io_binding()
        io.bind_cpu_input(self._input, x_in)
        io.bind_output(self._outputs[0], "cpu", 0, y.dtype, list(y.shape), y.ctypes.data)
        self._bound[x.shape[0]] = (io, x_in, y)
