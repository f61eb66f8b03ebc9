"""The dashboard's file-backed pages: the model registry with its gate verdicts, and the report files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from inference.manifest import MANIFEST_FILE, ManifestError, pointed_timeframes, read_manifest
from inference.promotions import read_events
from inference.verdict import VERDICTS_DIR, Verdict

REPORT_SUFFIXES = (".html", ".md")
SKIP_DIRS = frozenset({"offline", "decisions", "registry", "logs", "dead_letters", "feast", ".git", "__pycache__",
                       "checkpoints", "recovery"})  # big trees of data, never reports
MAX_REPORTS = 500


def registry_versions(root: Path) -> pd.DataFrame:
    """Return ``family, version, latest, created_at, feature_service, train_start, train_end, verdicts, problem``.

    ``latest``: the version is what runs of its timeframe load (its ``latest.<tf>`` pointer).
    """
    rows: list[tuple[Any, ...]] = []
    root = Path(root)
    families = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    for fam in families:
        current = set(pointed_timeframes(root, fam.name).values())
        for d in sorted(p for p in fam.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file()):
            verdicts = read_verdicts(d)
            said = ", ".join(f"{'PASS' if v.passed else 'FAIL'} ({v.strategy})" for v, _ in verdicts) or "none"
            try:
                m = read_manifest(d)
                rows.append((fam.name, d.name, d.name in current, m.created_at, m.feature_service, m.train_start,
                             m.train_end, said, ""))
            except ManifestError as exc:
                rows.append((fam.name, d.name, d.name in current, "", "", "", "", said, str(exc)))
    return pd.DataFrame(rows, columns=["family", "version", "latest", "created_at", "feature_service",
                                       "train_start", "train_end", "verdicts", "problem"])


def registry_events(root: Path, last: int = 200) -> pd.DataFrame:
    """Return the registry's newest events (promotions, rollbacks, retraining steps), newest first."""
    rows = [(e.at, e.timeframe, e.kind, "ok" if e.ok else "FAILED", e.by,
             " ".join(f"{f}={v}" for f, v in sorted(e.versions.items())),
             str(e.detail.get("reason") or e.detail.get("message") or ""), str(e.detail.get("run", "")))
            for e in read_events(root)[-last:]]
    return pd.DataFrame(rows[::-1], columns=["at", "timeframe", "event", "result", "by", "versions", "why", "run"])


def read_verdicts(version_dir: Path) -> list[tuple[Verdict, Path]]:
    """Return every verdict JSON stored on a version with its path (an unreadable one is left out)."""
    d = Path(version_dir) / VERDICTS_DIR
    out = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            out.append((Verdict.from_json(p.read_text()), p))
        except (ValueError, TypeError, KeyError):
            continue
    return out


def criteria_table(verdict: Verdict) -> pd.DataFrame:
    """Return ``criterion, value, needs, result, note`` of a verdict."""
    return pd.DataFrame([(c.name, c.value, f"{c.op} {c.threshold:g}", "PASS" if c.passed else "FAIL", c.note)
                         for c in verdict.criteria], columns=["criterion", "value", "needs", "result", "note"])


def report_files(dirs: Iterable[Path]) -> list[Path]:
    """Return the HTML and Markdown files under ``dirs`` (newest first, at most :data:`MAX_REPORTS`)."""
    found: list[Path] = []
    for top in dirs:
        top = Path(top)
        if top.is_dir():
            found += _walk(top)
    unique = {p.resolve(): p for p in found}
    return sorted(unique.values(), key=lambda p: p.stat().st_mtime, reverse=True)[:MAX_REPORTS]


def _walk(top: Path) -> list[Path]:
    out = []
    for p in top.iterdir():
        if p.is_dir():
            if p.name not in SKIP_DIRS and not p.name.startswith("."):
                out += _walk(p)
        elif p.suffix in REPORT_SUFFIXES:
            out.append(p)
    return out


def drift_report(data_dir: Path) -> tuple[dict[str, Any] | None, pd.DataFrame]:
    """Return the last drift check's report (``python -m training.drift``) and the history of checks."""
    import json

    out = Path(data_dir) / "drift"
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else None
    history = pd.read_json(out / "history.jsonl", lines=True) if (out / "history.jsonl").is_file() else pd.DataFrame()
    return report, history
