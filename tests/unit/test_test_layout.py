"""The test tree's own rules: shared helpers come from ``tests/kit``, never from another test module."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
KIT = TESTS / "kit"
BENCH = TESTS / "bench"  # scripts, not test modules: bench_decisions reuses bench_flow


def _imports(path: Path) -> list[tuple[int, str, int]]:
    """Return (line, imported module, relative level) for every import in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.lineno, node.module or "", node.level))
    return out


def _offences(path: Path, local_names: set[str]) -> list[str]:
    bad = []
    for line, module, level in _imports(path):
        top = module.split(".")[0]
        where = f"{path.relative_to(TESTS.parent) if TESTS in path.parents else path.name}:{line}"
        if level:
            bad.append(f"{where} relative import (from {'.' * level}{module} import ...)")
        elif top == "tests" and module != "tests.kit" and not module.startswith("tests.kit."):
            bad.append(f"{where} imports {module}")
        elif top in local_names:
            bad.append(f"{where} imports the test tree's module {module} by its bare name")
    return bad


def test_no_test_module_imports_another_test_module() -> None:
    files = sorted(f for f in TESTS.rglob("*.py") if BENCH not in f.parents)
    local = {f.stem for f in files if KIT not in f.parents} - {"__init__"}
    bad = [b for f in files for b in _offences(f, local)]
    assert not bad, "import shared helpers from tests/kit instead:\n" + "\n".join(bad)


def test_the_rule_catches_each_kind_of_offence(tmp_path: Path) -> None:
    f = tmp_path / "test_probe.py"
    src = ("from tests.unit.flows.test_bars import x\nimport tests.e2e.test_recovery\n"
           "from . import helper\nfrom replay_support import run\nfrom tests.kit.repo import PROJECT_ROOT\n")
    f.write_text(src)
    bad = _offences(f, {"replay_support"})
    assert len(bad) == 4 and all("tests.kit" not in b for b in bad)


def test_no_two_test_modules_share_a_file_name() -> None:
    """The test folders are not packages: pytest imports each module by its base name, so two would collide."""
    seen: dict[str, Path] = {}
    clashes = []
    for f in sorted(TESTS.rglob("test_*.py")):
        if f.name in seen:
            clashes.append(f"{seen[f.name].relative_to(TESTS)} and {f.relative_to(TESTS)}")
        seen.setdefault(f.name, f)
    assert not clashes, "test modules with the same file name: " + "; ".join(clashes)
