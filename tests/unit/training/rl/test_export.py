"""Policy export: ONNX equals each agent's deterministic predict; registry + PolicyRunner; no torch at inference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.manifest import ManifestError
from inference.policy import PolicyRunner
from inference.scorer import FeatureMismatch
from tests.kit.rl import envs, held_out, market, tiny
from training.export import ExportRejected
from training.rl.agents import FAMILIES, deterministic_actions, train_agent
from training.rl.export import export_policy, register_policy

LEVELS = ("strategic", "tactical", "execution")


@pytest.fixture(scope="module")
def trained() -> dict[str, object]:
    out = {}
    for level in LEVELS:
        train_env, valid_env, n = envs(level, "5m" if level == "execution" else "1h")
        out[level] = train_agent(tiny(level, steps=300, seed=2, n_eval_episodes=n), train_env, valid_env).model
    return out


@pytest.mark.parametrize("level", LEVELS)
def test_export_equals_the_agents_deterministic_predict(level: str, trained: dict[str, object]) -> None:
    model = trained[level]
    obs = held_out(level, model, n=200)
    exp = export_policy(model, obs)  # type: ignore[arg-type]
    from inference.scorer import open_session

    got = open_session(exp.onnx).run(["action"], {"obs": obs})[0]
    want = deterministic_actions(model, obs)  # type: ignore[arg-type]
    assert got.shape == want.shape == (len(obs), 1 if level != "strategic" else want.shape[1])
    if level == "execution":
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
        assert exp.tolerance == 0.0
    else:
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        assert exp.max_abs_diff <= 1e-5 and np.all(np.abs(got) <= 1.0)
    assert exp.checked_rows == len(obs)


@pytest.mark.parametrize("level", ["tactical", "execution"])
def test_export_is_rejected_when_predict_disagrees(level: str, trained: dict[str, object],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model = trained[level]
    obs = held_out(level, model, n=50)
    real = model.predict  # type: ignore[attr-defined]

    def shifted(o: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, None]:
        a, _ = real(o, deterministic=deterministic)
        return (a + 1 if level == "execution" else a * 0.999), None

    monkeypatch.setattr(model, "predict", shifted)
    with pytest.raises(ExportRejected, match="differs from predict"):
        export_policy(model, obs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"held_out must be \[n >= 1"):
        export_policy(model, obs[:, :-1])  # type: ignore[arg-type]


def _register(root: Path, level: str, model: object, obs: np.ndarray) -> None:
    md = market("5m" if level == "execution" else "1h")
    register_policy(root, FAMILIES[level], model, export_policy(model, obs),  # type: ignore[arg-type]
                    feature_service="lightgbm_1h_v1", features=md.feature_names,
                    train_start="2024-01-01T00:00:00+00:00", train_end="2024-02-01T00:00:00+00:00",
                    data_hash="-", seeds={"seed": 2}, config={"level": level}, metrics={"validation": {}})


@pytest.mark.parametrize("level", LEVELS)
def test_policy_runner_from_the_registry_acts_like_the_agent(level: str, trained: dict[str, object],
                                                              tmp_path: Path) -> None:
    model = trained[level]
    obs = held_out(level, model, n=100)
    _register(tmp_path, level, model, obs)
    runner = PolicyRunner.from_registry(tmp_path, FAMILIES[level])
    assert runner.features == market().feature_names
    assert runner.observation_size == obs.shape[1]
    got = runner.act(obs)
    want = deterministic_actions(model, obs)  # type: ignore[arg-type]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(runner.act(obs[:1].astype(np.float64)), want[:1], atol=1e-5)
    with pytest.raises(ValueError, match=r"observations must be \["):
        runner.act(obs[:, 1:])
    with pytest.raises(FeatureMismatch, match="needs features the feed lacks"):
        PolicyRunner.from_registry(tmp_path, FAMILIES[level], allowed_features=market().feature_names[1:])
    d = tmp_path / FAMILIES[level] / (tmp_path / FAMILIES[level] / "latest").read_text().strip()
    (d / "policy.onnx").write_bytes((d / "policy.onnx").read_bytes() + b"\0")
    with pytest.raises(ManifestError, match="policy.onnx sha256"):
        PolicyRunner.from_registry(tmp_path, FAMILIES[level])


def test_policy_runner_imports_no_training_library(trained: dict[str, object], tmp_path: Path) -> None:
    obs = held_out("tactical", trained["tactical"], n=20)
    _register(tmp_path, "tactical", trained["tactical"], obs)
    np.save(tmp_path / "obs.npy", obs)
    code = ("import sys, numpy as np; from inference.policy import PolicyRunner; "
            f"r = PolicyRunner.from_registry({str(tmp_path)!r}, 'rl_tactical'); "
            f"a = r.act(np.load({str(tmp_path / 'obs.npy')!r})); "
            "bad = [m for m in ('torch', 'stable_baselines3', 'gymnasium', 'training', 'lightgbm') "
            "if m in sys.modules]; print(a.shape, bad); sys.exit(1 if bad or a.shape != (20, 1) else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[4])
    assert res.returncode == 0, res.stdout + res.stderr
