"""Export a trained SB3 policy to ONNX with its action post-processing, accepted only on parity.

The graph takes observations ``obs [n, d]`` (float32) and returns ``action [n, k]``
exactly as the agent's deterministic ``predict`` would:

* PPO (Box actions): the Gaussian's mean, clipped to the action space;
* DDPG (Box actions): the tanh actor, unscaled from [-1, 1] to the action space;
* DQN (Discrete actions): ``argmax`` of the Q-values, int64, shape ``[n, 1]``.

Acceptance: on held-out observations, onnxruntime must reproduce
``model.predict(obs, deterministic=True)`` within 1e-5 (Box) or exactly
(Discrete); otherwise :class:`training.export.ExportRejected` names the
difference.  The registry entry uses the models' format (``training/registry``):
``policy.onnx`` plus the SB3 zip (``agent.zip``), manifest ``features`` = the
market feature names of the observation in order.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import DDPG, DQN, PPO, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from torch import nn

from inference.manifest import Manifest
from inference.policy import POLICY_FILE
from inference.scorer import open_session
from training.export import TOLERANCE, ExportRejected, OnnxExport
from training.registry import Parity, save_model

OPSET = 17
AGENT_FILE = "agent.zip"


class _BoxPolicy(nn.Module):
    """Observation -> deterministic Box action, post-processed like ``BasePolicy.predict``."""

    def __init__(self, model: BaseAlgorithm) -> None:
        super().__init__()
        space = model.action_space
        assert isinstance(space, spaces.Box)
        self.policy = model.policy
        self.squash = bool(model.policy.squash_output)
        self.low: torch.Tensor = torch.as_tensor(space.low, dtype=torch.float32)
        self.high: torch.Tensor = torch.as_tensor(space.high, dtype=torch.float32)
        self.ppo = isinstance(model, PPO)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.ppo:  # ActorCriticPolicy: mean of the Gaussian
            p: Any = self.policy
            latent = p.mlp_extractor.forward_actor(p.extract_features(obs, p.pi_features_extractor))
            raw = p.action_net(latent)
        else:  # TD3Policy (DDPG): tanh actor
            raw = self.policy.actor(obs)  # type: ignore[operator]
        if self.squash:
            return self.low + 0.5 * (raw + 1.0) * (self.high - self.low)
        return torch.minimum(torch.maximum(raw, self.low), self.high)


class _DiscretePolicy(nn.Module):
    """Observation -> greedy action of a DQN, ``[n, 1]`` int64."""

    def __init__(self, model: BaseAlgorithm) -> None:
        super().__init__()
        self.q_net: nn.Module = model.policy.q_net  # type: ignore[union-attr,assignment]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.argmax(self.q_net(obs), dim=1, keepdim=True)


def policy_module(model: BaseAlgorithm) -> nn.Module:
    """Return the torch module computing the agent's deterministic post-processed action."""
    if isinstance(model, DQN):
        return _DiscretePolicy(model).eval()
    if isinstance(model, (PPO, DDPG, TD3)) and isinstance(model.action_space, spaces.Box):
        if isinstance(model, PPO) and model.policy.use_sde:  # type: ignore[union-attr]
            raise ValueError("PPO with gSDE is not exportable here (use_sde=False)")
        return _BoxPolicy(model).eval()
    raise TypeError(f"cannot export {type(model).__name__} with {model.action_space}")


def _to_onnx(module: nn.Module, example: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter warns that it is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buf,  # type: ignore[arg-type]  # BytesIO is accepted
                          dynamo=False, opset_version=OPSET, input_names=["obs"], output_names=["action"],
                          dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}})
    return buf.getvalue()


def export_policy(model: BaseAlgorithm, held_out: np.ndarray, tolerance: float = TOLERANCE) -> OnnxExport:
    """Export ``model``'s policy; accept only if onnxruntime equals its deterministic ``predict``.

    Args:
        model: trained PPO, DDPG or DQN.
        held_out: observations ``[n, d]`` not used for training (validation or test slice).
        tolerance: largest accepted absolute difference for Box actions (Discrete must be equal).

    Raises:
        ExportRejected: onnxruntime's actions differ from ``predict``'s.
        ValueError: ``held_out`` is empty or has the wrong width.
    """
    obs = np.asarray(held_out, np.float32)
    d = int(np.prod(model.observation_space.shape or (0,)))
    if obs.ndim != 2 or obs.shape[1] != d or len(obs) == 0:
        raise ValueError(f"held_out must be [n >= 1, {d}] observations, got shape {obs.shape}")
    module = policy_module(model)
    blob = _to_onnx(module, torch.as_tensor(obs[:2]))
    got = open_session(blob).run(["action"], {"obs": obs})[0]
    native, _ = model.predict(obs, deterministic=True)
    native = np.asarray(native).reshape(len(obs), -1)
    if isinstance(model.action_space, spaces.Discrete):
        bad = int(np.sum(got.astype(np.int64) != native.astype(np.int64)))
        if bad:
            raise ExportRejected(f"{type(model).__name__}: onnxruntime argmax differs from predict on "
                                 f"{bad} of {len(obs)} held-out observations")
        diff, tolerance = 0.0, 0.0
    else:
        diff = float(np.max(np.abs(got.astype(np.float64) - native.astype(np.float64))))
        if not diff <= tolerance:  # also rejects NaN
            raise ExportRejected(f"{type(model).__name__}: onnxruntime differs from predict by max |diff| = "
                                 f"{diff:.3g} > tolerance {tolerance:.1g} on {len(obs)} held-out observations")
    return OnnxExport(blob, ("obs",), ("action",), diff, tolerance, len(obs), OPSET)


def agent_bytes(model: BaseAlgorithm) -> bytes:
    """Return the SB3 zip of ``model`` as bytes."""
    buf = io.BytesIO()
    model.save(buf)
    return buf.getvalue()


def arrays_hash(*arrays: np.ndarray) -> str:
    """Return sha256 over the shapes, dtypes and little-endian bytes of ``arrays`` (training data hash)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


def register_policy(root: str | Path, family: str, model: BaseAlgorithm, export: OnnxExport, *,
                    feature_service: str, features: Sequence[str], train_start: Any, train_end: Any,
                    data_hash: str, seeds: Mapping[str, int], config: Mapping[str, Any],
                    metrics: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Manifest:
    """Save an accepted export (and the SB3 zip) as a new version of ``family`` in the registry.

    ``features`` are the market feature names the observation starts with, in order;
    ``extra`` records how the rest of the observation and the action are laid out.
    """
    space = model.action_space
    if isinstance(space, spaces.Discrete):
        action: dict[str, Any] = {"kind": "discrete", "n": int(space.n)}
    elif isinstance(space, spaces.Box):
        action = {"kind": "box", "low": space.low.tolist(), "high": space.high.tolist()}
    else:
        raise TypeError(f"cannot register a policy with action space {space}")
    info = {"algorithm": type(model).__name__, "action": action,
            "observation_size": int(np.prod(model.observation_space.shape or (0,))), **dict(extra or {})}
    return save_model(root, family, files={POLICY_FILE: export.onnx, AGENT_FILE: agent_bytes(model)},
                      feature_service=feature_service, features=features, train_start=train_start,
                      train_end=train_end, data_hash=data_hash, seeds=seeds, config=config, metrics=metrics,
                      parity=Parity(export.max_abs_diff, export.tolerance, export.checked_rows), extra=info)
