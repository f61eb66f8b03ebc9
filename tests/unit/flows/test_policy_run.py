"""The policy's stretch loop: bit for bit the books stepped one by one and the policy acting per bar time."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from flows.operators.policy_run import act_binding, run_stretch
from flows.operators.scoring import PolicyBook
from inference.policy import PolicyRunner
from inference.rl_observation import TacticalBook
from inference.scorer import open_session

D = 7  # 2 features + 5 state terms


def onnx_policy(d: int, seed: int = 0) -> PolicyRunner:
    """A small MLP exported to ONNX (Gemm, Tanh, a scale beyond [-1, 1] so that clipping shows), in a PolicyRunner."""
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(0, 1, (d, 16)).astype(np.float32), rng.normal(0, 0.1, 16).astype(np.float32)
    w2 = rng.normal(0, 1, (16, 1)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["obs", "w1", "b1"], ["h"]), helper.make_node("Tanh", ["h"], ["t"]),
             helper.make_node("MatMul", ["t", "w2"], ["z"]), helper.make_node("Tanh", ["z"], ["u"]),
             helper.make_node("Mul", ["u", "k"], ["action"])]
    inits = [numpy_helper.from_array(v, n) for n, v in
             (("w1", w1), ("b1", b1), ("w2", w2), ("k", np.array([1.5], np.float32)))]
    graph = helper.make_graph(nodes, "policy", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["n", d])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["n", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    manifest = SimpleNamespace(family="rl_tactical", version="t", extra={}, config={})
    return PolicyRunner(manifest, open_session(model.SerializeToString()), ("f1", "f2"), d)  # type: ignore[arg-type]


class _ActOnly:
    """A policy with only ``act`` (the scoring tests' kind of stand-in): the ONNX one behind it."""

    def __init__(self, inner: PolicyRunner) -> None:
        self.inner = inner

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.inner.act(obs)


def books(n: int, rng: np.random.Generator) -> list[PolicyBook]:
    """Books with some history: positions open, long and short, different closes and targets."""
    out = []
    for i in range(n):
        book = TacticalBook()
        pb = PolicyBook(book, 1.0 + 0.1 * i, [0.0, 0.7, -0.4, 1.0][i % 4])
        for _ in range(3 + i):
            pb.step(float(rng.normal(0, 0.01)), (0.001, 0.0005, 0.0))
        out.append(pb)
    return out


def reference(bks: list[PolicyBook], rets: list[float], obs: np.ndarray, policy: PolicyRunner, tail: int,
              costs: tuple[float, float, float], missing: list[bool] | None) -> tuple[list[float], list[bytes]]:
    """PolicyBook.step of each book, the state in the rows, act per bar time, the clipped first action as target."""
    n, out, seen = len(bks), [], []
    for base in range(0, len(rets), n):
        rows = obs[base:base + n].copy()
        rows[:, tail:] = [b.step(r, costs) for b, r in zip(bks, rets[base:base + n], strict=True)]
        seen.append(rows.tobytes())
        for i, v in enumerate(policy.act(rows)[:, 0].tolist()):
            v = min(max(v, -1.0), 1.0)
            if missing is not None and missing[base + i]:
                out.append(math.nan)
            else:
                out.append(v)
                bks[i].target = v
    return out, seen


@pytest.mark.parametrize("costs", [(0.001, 0.0005, 0.0), (0.001, 0.0005, 0.02), (0.0, 0.0, 0.0)])
@pytest.mark.parametrize("signal", [False, True])
@pytest.mark.parametrize("bound", [True, False])
def test_the_stretch_loop_equals_the_books_stepped_and_the_policy_acting_bar_time_by_bar_time(
        costs: tuple[float, float, float], signal: bool, bound: bool) -> None:
    rng = np.random.default_rng(7)
    n, n_t, n_feat = 4, 60, 2
    tail = n_feat + signal
    d = tail + 5
    policy = onnx_policy(d)
    rets = rng.normal(0, 0.02, n * n_t).tolist()
    rets[5] = 0.0
    obs = np.zeros((n * n_t, d), np.float32)
    obs[:, :tail] = rng.normal(0, 1, (n * n_t, tail))
    missing = (rng.random(n * n_t) < 0.1).tolist() if signal else None
    want_books, got_books = books(n, np.random.default_rng(1)), books(n, np.random.default_rng(1))
    want, seen = reference(want_books, rets, obs, policy, tail, costs, missing)
    runner = policy if bound else _ActOnly(policy)
    binding = act_binding(runner, n, d)
    got = run_stretch(got_books, list(map(math.exp, rets)), obs, binding, tail, costs, missing)
    assert repr(got) == repr(want)  # NaN-safe, every bit of every double
    assert [(b.book.snapshot(), b.close, b.target) for b in got_books] == \
        [(b.book.snapshot(), b.close, b.target) for b in want_books]
    assert binding[0].tobytes() == seen[-1]  # the last bar time's observations, as the policy saw them
    assert any(abs(v) == 1.0 for v in want) and sum(b.book.units != 0.0 for b in want_books) >= 2


def test_a_stretch_of_the_wrong_shape_is_refused() -> None:
    policy = onnx_policy(D)
    bks = books(2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="run_stretch"):
        run_stretch(bks, [1.0] * 3, np.zeros((3, D), np.float32), act_binding(policy, 2, D), 2, (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="observations must be"):
        policy.bound(np.zeros((2, D + 1), np.float32))
