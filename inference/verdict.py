"""Go-live verdicts stored beside the model versions they judge.

``python -m training.gate`` judges a walk-forward result and a paper-trading record
against the go-live criteria and writes one :class:`Verdict` into the registry
directory of every model version deployed with it (the ensemble, the policy):
``<registry>/<family>/<version>/verdicts/<strategy>-<config_hash[:12]>.json``.
A verdict is bound to the versions it judged, the strategy, the decision config hash
(:func:`flows.go_live.decision_config_hash`) and the data hash of the candles, so the
live flow (:func:`flows.go_live.check_go_live`) accepts it only for exactly that
deployment.  Verdicts live in a subdirectory, which the manifest's file check
(:func:`inference.manifest.verify`) ignores: judging a model never changes its files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VERDICTS_DIR = "verdicts"


@dataclass(frozen=True)
class Criterion:
    """One go-live criterion: its measured value against its threshold."""

    name: str
    value: float | None  # None: could not be measured (counts as a failure)
    op: str  # how value compares with threshold: ">", ">=", "<", "<="
    threshold: float
    passed: bool
    note: str = ""

    def describe(self) -> str:
        """Return ``name = value (needs op threshold): PASS|FAIL [note]``."""
        v = "n/a" if self.value is None else f"{self.value:.4g}"
        tail = f" [{self.note}]" if self.note else ""
        return f"{self.name} = {v} (needs {self.op} {self.threshold:g}): {'PASS' if self.passed else 'FAIL'}{tail}"


def judge(name: str, value: float | None, op: str, threshold: float, note: str = "") -> Criterion:
    """Return the criterion ``value op threshold`` (an unmeasured or NaN value fails)."""
    ops = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}
    if op not in ops:
        raise ValueError(f"op must be one of {sorted(ops)}, got {op!r}")
    ok = value is not None and value == value and bool(ops[op](float(value), float(threshold)))
    return Criterion(name, None if value is None or value != value else float(value), op, float(threshold), ok, note)


@dataclass(frozen=True)
class Verdict:
    """The gate's judgement of one deployment (versions, strategy, config, data)."""

    passed: bool
    criteria: tuple[Criterion, ...]
    strategy: str
    config_hash: str
    data_hash: str
    versions: dict[str, str]  # family -> version judged (ensemble, its members, the policy)
    created_at: str  # UTC ISO 8601
    source: str = ""  # the walk-forward directory judged
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> tuple[Criterion, ...]:
        """Return the criteria that failed."""
        return tuple(c for c in self.criteria if not c.passed)

    def file_name(self) -> str:
        """Return the file name this verdict is stored under."""
        return f"{self.strategy}-{self.config_hash[:12]}.json"

    def to_json(self) -> str:
        """Serialise with sorted keys."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Verdict:
        """Parse :meth:`to_json` output."""
        raw = json.loads(text)
        raw["criteria"] = tuple(Criterion(**c) for c in raw["criteria"])
        return cls(**raw)


def verdict_path(version_dir: str | Path, strategy: str, config_hash: str) -> Path:
    """Return where the verdict of ``strategy`` and ``config_hash`` on this version is stored."""
    return Path(version_dir) / VERDICTS_DIR / f"{strategy}-{config_hash[:12]}.json"


def write_verdict(version_dirs: Sequence[str | Path], verdict: Verdict) -> list[Path]:
    """Write ``verdict`` into every version directory (replacing an older verdict of the same binding)."""
    out = []
    for d in version_dirs:
        path = verdict_path(d, verdict.strategy, verdict.config_hash)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(verdict.to_json())
        tmp.replace(path)
        out.append(path)
    return out


def read_verdict(version_dir: str | Path, strategy: str, config_hash: str) -> Verdict | None:
    """Return the stored verdict of this binding, or None."""
    path = verdict_path(version_dir, strategy, config_hash)
    return Verdict.from_json(path.read_text()) if path.is_file() else None


def list_verdicts(version_dir: str | Path) -> list[Verdict]:
    """Return every verdict stored on a version (any strategy or config)."""
    d = Path(version_dir) / VERDICTS_DIR
    return [Verdict.from_json(p.read_text()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []


def binding_problems(verdict: Verdict, deployed: Mapping[str, str], strategy: str, config_hash: str) -> list[str]:
    """Return why ``verdict`` does not judge this deployment (empty: it does)."""
    problems = []
    if verdict.strategy != strategy:
        problems.append(f"the verdict is for strategy {verdict.strategy!r}, the settings trade {strategy!r}")
    if verdict.config_hash != config_hash:
        problems.append(f"the verdict is for decision config {verdict.config_hash[:12]}, the settings hash to "
                        f"{config_hash[:12]}")
    for family, version in deployed.items():
        judged = verdict.versions.get(family)
        if judged != version:
            problems.append(f"the verdict judged {family} {judged or '(none)'}, {version} is deployed")
    return problems
