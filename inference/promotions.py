"""Which registered versions each timeframe runs, and the log of every change to that.

A family's versions live side by side in ``<root>/<family>/<version>/``; what a run of one
timeframe loads is the family's pointer for it, ``<root>/<family>/latest.<timeframe>``
(:func:`inference.manifest.resolve_version_dir`).  The one-line ``latest`` of the layout
before timeframes is still written (the last promotion of any timeframe) for older readers,
and read as it is for the timeframe its manifest names; the first promotion of another
timeframe gives it its own ``latest.<tf>`` first (:func:`migrate`), so it is never lost.

Every promotion, rollback and retraining step is one JSON line of ``<root>/events.jsonl``
(:class:`RegistryEvent`): what, when, which versions, which ones they replaced, by whom and
why.  A rollback undoes the newest promotion of its timeframe not yet undone.  Plain files
and json only: the flow and the dashboard read this without any training library.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inference.manifest import (
    LATEST_FILE,
    ManifestError,
    pointed_timeframes,
    pointer_name,
    read_manifest,
    resolve_version_dir,
)

EVENTS_FILE = "events.jsonl"
PROMOTE, ROLLBACK = "promote", "rollback"


@dataclass(frozen=True)
class RegistryEvent:
    """One line of the registry's event log."""

    kind: str  # promote, rollback, or a retraining step (retrain:<step>)
    timeframe: str
    at: str  # UTC ISO 8601
    by: str  # the command or job that did it
    versions: dict[str, str] = field(default_factory=dict)  # family -> version now pointed at
    previous: dict[str, str | None] = field(default_factory=dict)  # family -> version before (None: none)
    ok: bool = True
    detail: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """Return one line: when, what, by whom, which versions."""
        vs = " ".join(f"{f}={v}" for f, v in sorted(self.versions.items()))
        why = self.detail.get("reason") or self.detail.get("message") or ""
        return (f"{self.at} {self.timeframe} {self.kind}{'' if self.ok else ' FAILED'} by {self.by}"
                + (f": {vs}" if vs else "") + (f" ({why})" if why else ""))


def _now() -> str:
    return datetime.now(UTC).isoformat()


def append_event(root: str | Path, event: RegistryEvent) -> RegistryEvent:
    """Append ``event`` to the log (one ``write`` of one line, so concurrent appends do not interleave)."""
    path = Path(root) / EVENTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(asdict(event), sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return event


def read_events(root: str | Path, timeframe: str | None = None) -> list[RegistryEvent]:
    """Return the log's events, oldest first (of one timeframe when given); unreadable lines are skipped."""
    path = Path(root) / EVENTS_FILE
    if not path.is_file():
        return []
    out: list[RegistryEvent] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            ev = RegistryEvent(**json.loads(line))
        except (ValueError, TypeError):
            continue  # a line cut by a crash mid-write
        if timeframe is None or ev.timeframe == timeframe:
            out.append(ev)
    return out


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def migrate(root: str | Path, family: str) -> dict[str, str]:
    """Give a pre-timeframe ``latest`` its own ``latest.<tf>`` pointer; return timeframe -> version."""
    fam = Path(root) / family
    pointers = pointed_timeframes(root, family)
    for tf, version in pointers.items():
        if not (fam / pointer_name(tf)).is_file():
            _write_atomic(fam / pointer_name(tf), f"{version}\n")
    return pointers


def set_pointer(root: str | Path, family: str, timeframe: str, version: str | None) -> None:
    """Point a family's ``timeframe`` at ``version`` (``None`` removes the pointer); check the timeframe first."""
    fam = Path(root) / family
    migrate(root, family)
    if version is None:
        (fam / pointer_name(timeframe)).unlink(missing_ok=True)
        legacy = fam / LATEST_FILE
        if legacy.is_file() and _timeframe_at(fam, legacy.read_text().strip()) == timeframe:
            legacy.unlink()  # else it would still point this timeframe at the version taken away
        return
    resolve_version_dir(root, family, version, timeframe=timeframe)  # refuses another timeframe's version
    _write_atomic(fam / pointer_name(timeframe), f"{version}\n")
    _write_atomic(fam / LATEST_FILE, f"{version}\n")


def _timeframe_at(fam: Path, version: str) -> str | None:
    try:
        return read_manifest(fam / version).timeframe
    except ManifestError:
        return None


def current(root: str | Path, family: str, timeframe: str) -> str | None:
    """Return the version a family's ``timeframe`` points at, or ``None``."""
    return pointed_timeframes(root, family).get(timeframe)


def promote(root: str | Path, timeframe: str, versions: Mapping[str, str], by: str, reason: str = "",
            detail: Mapping[str, Any] | None = None, now: Callable[[], str] = _now) -> RegistryEvent:
    """Point every family of ``versions`` at its version for ``timeframe``, as one logged promotion.

    Every version is checked (it exists, its manifest reads, it is of ``timeframe``) before any
    pointer moves.

    Raises:
        ManifestError: a version is missing or unreadable.
        TimeframeMismatch: a version is of another timeframe.
    """
    for family, version in versions.items():
        read_manifest(resolve_version_dir(root, family, version, timeframe=timeframe))
    previous = {f: current(root, f, timeframe) for f in versions}
    for family, version in versions.items():
        set_pointer(root, family, timeframe, version)
    return append_event(root, RegistryEvent(PROMOTE, timeframe, now(), by, dict(versions), previous,
                                            detail={"reason": reason, **dict(detail or {})}))


def open_promotions(root: str | Path, timeframe: str) -> list[RegistryEvent]:
    """Return the timeframe's promotions not undone by a rollback, oldest first."""
    stack: list[RegistryEvent] = []
    for ev in read_events(root, timeframe):
        if ev.kind == PROMOTE and ev.ok:
            stack.append(ev)
        elif ev.kind == ROLLBACK and ev.ok and stack:
            stack.pop()
    return stack


def rollback(root: str | Path, timeframe: str, by: str, reason: str = "",
             now: Callable[[], str] = _now) -> RegistryEvent:
    """Restore the versions the newest promotion of ``timeframe`` replaced, and log it.

    Raises:
        ManifestError: no promotion of ``timeframe`` left to undo.
    """
    stack = open_promotions(root, timeframe)
    if not stack:
        raise ManifestError(f"no promotion of {timeframe} models under {Path(root)} to roll back")
    last = stack[-1]
    for family, version in last.previous.items():
        set_pointer(root, family, timeframe, version)
    restored = {f: v for f, v in last.previous.items() if v is not None}
    return append_event(root, RegistryEvent(ROLLBACK, timeframe, now(), by, restored, dict(last.versions),
                                            detail={"reason": reason, "undoes": last.at}))
