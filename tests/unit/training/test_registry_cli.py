"""``python -m training.registry``: list, show (lineage), promote, rollback, verify (issue 20, item 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from inference.manifest import TensorSpec, pointer_name
from inference.verdict import Verdict, judge, write_verdict
from tests.kit.repo import PROJECT_ROOT
from training.registry import Parity, save_model
from training.registry.__main__ import main

SPEC = (TensorSpec("x", (None, 2)),)


def register(root: Path, family: str, tf: str, latest: bool = True, extra: dict | None = None,
             service: str | None = None) -> str:
    return save_model(root, family, files={"model.onnx": f"{family}{tf}".encode()},
                      feature_service=service or f"{family}_{tf}_v1", features=["a"],
                      train_start="2023-01-01T00:00:00Z", train_end="2023-06-01T00:00:00Z", data_hash="d" * 64,
                      seeds={"seed": 1}, config={"family": family}, metrics={"folds": [], "mean": {"roc_auc": 0.55}},
                      parity=Parity(1e-7, 1e-5, 50), inputs=SPEC, outputs=SPEC, set_latest=latest,
                      extra=extra or {}, symbols=["BTC/USDT"], promoted_by="python -m training.train").version


def test_show_gives_the_lineage_with_the_gate_verdict_and_who_promoted_it(tmp_path, capsys) -> None:
    lgb = register(tmp_path, "lightgbm", "1h")
    ens = register(tmp_path, "ensemble", "1h", extra={"members": {"lightgbm": lgb}})
    verdict = Verdict(True, (judge("sharpe", 1.2, ">", 0.5),), "legacy", "c" * 64, "h", {"ensemble": ens},
                      "2024-01-02T00:00:00Z", "wf")
    write_verdict([tmp_path / "ensemble" / ens], verdict)
    assert main(["--registry", str(tmp_path), "show", "ensemble", "--timeframe", "1h"]) == 0
    out = capsys.readouterr().out
    for part in ("data window  2023-01-01T00:00:00+00:00 .. 2023-06-01T00:00:00+00:00", "data hash    " + "d" * 64,
                 "config hash", "symbols      BTC/USDT", "roc_auc", "gate         PASS for legacy",
                 "promote by python -m training.train", f"members      lightgbm={lgb}"):
        assert part in out, part


def test_promote_an_ensemble_moves_its_members_and_rollback_restores_both(tmp_path, capsys) -> None:
    lgb1 = register(tmp_path, "lightgbm", "1h")
    ens1 = register(tmp_path, "ensemble", "1h", extra={"members": {"lightgbm": lgb1}})
    lgb2 = register(tmp_path, "lightgbm", "1h", latest=False)
    ens2 = register(tmp_path, "ensemble", "1h", latest=False, extra={"members": {"lightgbm": lgb2}})

    def pointed() -> tuple[str, str]:
        return tuple((tmp_path / f / pointer_name("1h")).read_text().strip() for f in ("ensemble", "lightgbm"))

    assert main(["--registry", str(tmp_path), "promote", "ensemble", ens2, "--by", "ops", "--reason", "test"]) == 0
    assert pointed() == (ens2, lgb2)
    assert main(["--registry", str(tmp_path), "rollback", "--timeframe", "1h"]) == 0
    assert pointed() == (ens1, lgb1)
    capsys.readouterr()
    assert main(["--registry", str(tmp_path), "list", "--timeframe", "1h"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("ensemble")]
    assert [r.split()[2] == "*" for r in rows] == [True, False]


def test_verify_finds_a_mixed_deployment_and_a_tampered_file(tmp_path, capsys) -> None:
    register(tmp_path, "ensemble", "1h")
    register(tmp_path, "rl_tactical", "1m", service="lightgbm_1m_v1")
    register(tmp_path, "rl_tactical", "1h", service="lightgbm_1h_v2")
    assert main(["--registry", str(tmp_path), "verify"]) == 1
    out = capsys.readouterr().out
    assert "observes lightgbm_1h_v2 but the ensemble" in out and "1 problem(s)" in out
    v = register(tmp_path, "gnn", "1h")
    (tmp_path / "gnn" / v / "model.onnx").write_bytes(b"changed")
    assert main(["--registry", str(tmp_path), "verify", "--timeframe", "1h"]) == 1
    assert "model.onnx sha256" in capsys.readouterr().out


def test_the_module_runs_and_a_missing_version_is_a_message_not_a_traceback(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "training.registry", "--registry", str(tmp_path), "show", "lstm",
                           "nope"], capture_output=True, text=True, cwd=PROJECT_ROOT, check=False)
    assert done.returncode == 2 and done.stderr.startswith("error: no manifest at") and "Traceback" not in done.stderr
