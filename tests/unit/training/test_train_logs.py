"""Each training run logs to its own TensorBoard directory (issue 18: runs used to merge into one)."""

from __future__ import annotations

from pathlib import Path

from training.train import run_log_dir


def test_two_runs_never_share_a_log_directory(tmp_path: Path) -> None:
    first, second = run_log_dir(tmp_path / "lstm", 7), run_log_dir(tmp_path / "lstm", 7)
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == second.parent == tmp_path / "lstm"
    assert first.name.endswith("-seed7") and second.name.startswith(first.name[:16])
