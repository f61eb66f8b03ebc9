"""Which top-level trees may import which: every module's imports parsed with ``ast``, lazy ones included.

- flows/, training/ and inference/ import nothing from infra/ (the system never
  depends on its own test double or the bring-up scripts);
- infra/replay_exchange imports nothing from flows/, training/ or inference/ (the
  independent double of an exchange);
- inference/ imports no training library (it runs exported models only).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAINING_LIBRARIES = ("lightgbm", "torch", "torch_geometric", "stable_baselines3", "gymnasium", "training")
RULES = [  # (tree, forbidden top-level packages, why)
    ("flows", ("infra",), "production code imports nothing from infra/"),
    ("training", ("infra",), "production code imports nothing from infra/"),
    ("inference", ("infra",), "production code imports nothing from infra/"),
    ("infra/replay_exchange", ("flows", "training", "inference"), "the replay exchange is independent of the system"),
    ("inference", TRAINING_LIBRARIES, "inference imports no training library"),
]


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line, module) of every import in a file, at any depth (inside functions, ``if TYPE_CHECKING``)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def violations(tree: str, forbidden: tuple[str, ...]) -> list[str]:
    """Return ``file:line module`` for each import of a forbidden package under ``tree``."""
    found = []
    for path in sorted((ROOT / tree).rglob("*.py")):
        for line, module in imported_modules(path):
            if module.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


@pytest.mark.parametrize(("tree", "forbidden", "why"), RULES, ids=[f"{t}-{'|'.join(f)}" for t, f, _ in RULES])
def test_import_direction(tree: str, forbidden: tuple[str, ...], why: str) -> None:
    assert (ROOT / tree).is_dir()
    assert violations(tree, forbidden) == [], why


def test_relative_imports_stay_inside_their_tree() -> None:
    """A relative import could cross a tree unseen by the rules above: there are none."""
    relative = [f"{p.relative_to(ROOT)}:{n.lineno}" for tree in ("flows", "training", "inference", "infra")
                for p in sorted((ROOT / tree).rglob("*.py"))
                for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.ImportFrom) and n.level > 0]
    assert relative == []


def test_the_checker_sees_lazy_and_typing_only_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import infra.db\n"
                   "def f():\n    from infra.replay_exchange import running_replay\n")
    assert [m for _, m in imported_modules(src)] == ["typing", "infra.db", "infra.replay_exchange"]


def test_pure_operators_and_the_paper_broker_load_no_configuration_libraries() -> None:
    """bars, features and the paper broker import neither pydantic nor yaml (directly or through flows.settings)."""
    code = ("import sys, flows.operators.bars, flows.operators.features, flows.execution.paper\n"
            "print(','.join(m for m in ('pydantic', 'yaml', 'flows.settings') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == ""
