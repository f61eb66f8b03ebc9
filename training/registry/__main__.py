"""The model registry's command line: list, show, promote, roll back and verify versions.

    python -m training.registry list [--timeframe 1h] [--family lightgbm]
    python -m training.registry show FAMILY [VERSION] [--timeframe 1h]
    python -m training.registry promote FAMILY VERSION [--by NAME] [--reason TEXT]
    python -m training.registry rollback --timeframe 1h [--reason TEXT]
    python -m training.registry verify [--timeframe 1h]
    python -m training.registry events [--timeframe 1h] [--last 20]

``show`` prints a version's lineage: the data window and hash, the config hash, the
symbols, the walk-forward metrics, the export parity, the gate verdicts stored on it and
every promotion or rollback that named it (by what and when).  Promoting an ensemble
promotes the members it pins too, so a timeframe's pointers always agree.  ``verify``
re-hashes every version's files and checks that each timeframe's ensemble, members and
policy are of that timeframe; it exits 1 on any problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flows.cli import HelpFormatter
from flows.settings import SettingsError, load_settings
from inference.manifest import (
    Manifest,
    ManifestError,
    check_policy,
    pointed_timeframes,
    read_manifest,
    resolve_version_dir,
    verify,
)
from inference.promotions import promote, read_events, rollback
from inference.verdict import list_verdicts
from training.registry import list_versions

POLICY_PREFIX = "rl_"


def families(root: Path) -> list[str]:
    """Return the registry's model families (directories holding versions)."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """Return a version's headline figures: a model's walk-forward mean, a policy's validation and budget."""
    figures = metrics.get("mean") or {**metrics, **metrics.get("validation", {})}  # a policy has no mean
    return {k: round(v, 4) for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def lineage(root: Path, m: Manifest) -> list[str]:
    """Return the lines of a version's lineage (see module docstring)."""
    mean = headline(m.metrics)
    lines = [f"{m.family}/{m.version}  ({m.timeframe or '?'} bars, feature service {m.feature_service})",
             f"  created      {m.created_at}",
             f"  data window  {m.train_start} .. {m.train_end}",
             f"  data hash    {m.data_hash}",
             f"  config hash  {m.config_hash}",
             f"  symbols      {', '.join(m.symbols) or '(not recorded)'}",
             f"  metrics      {mean or '(none)'}",
             f"  parity       max |diff| {m.parity.max_abs_diff:.2e} on {m.parity.rows} rows "
             f"(tolerance {m.parity.tolerance:g})"]
    if m.extra.get("members"):
        lines.append("  members      " + " ".join(f"{f}={v}" for f, v in m.extra["members"].items()))
    verdicts = list_verdicts(root / m.family / m.version)
    for v in verdicts:
        lines.append(f"  gate         {'PASS' if v.passed else 'FAIL'} for {v.strategy} (config {v.config_hash[:12]}, "
                     f"judged {v.created_at})")
    if not verdicts:
        lines.append("  gate         no verdict (python -m training.gate)")
    for ev in read_events(root, m.timeframe):
        if m.version in ev.versions.values() or m.version in ev.previous.values():
            lines.append(f"  event        {ev.describe()}")
    return lines


def cmd_list(root: Path, a: argparse.Namespace) -> int:
    """Print every version, its timeframe, whether it is current, its window and verdicts."""
    print(f"registry {root}")
    for fam in families(root):
        if a.family and fam != a.family:
            continue
        current = pointed_timeframes(root, fam)
        for version in list_versions(root, fam):
            try:
                m = read_manifest(root / fam / version)
            except ManifestError as exc:
                print(f"{fam:14} {'?':4} {version}  unreadable: {exc}")
                continue
            if a.timeframe and m.timeframe != a.timeframe:
                continue
            mark = "*" if current.get(m.timeframe or "") == version else " "
            said = ",".join("PASS" if v.passed else "FAIL" for v in list_verdicts(root / fam / version)) or "-"
            print(f"{fam:14} {m.timeframe or '?':4} {mark} {version}  {m.train_start[:16]}..{m.train_end[:16]}  "
                  f"{len(m.symbols) or '?'} symbols  gate {said}")
    print("* = the version runs of that timeframe load")
    return 0


def cmd_show(root: Path, a: argparse.Namespace) -> int:
    """Print the lineage of one version (``latest`` of ``--timeframe`` by default)."""
    m = read_manifest(resolve_version_dir(root, a.family, a.version, timeframe=a.timeframe))
    print("\n".join(lineage(root, m)))
    return 0


def cmd_promote(root: Path, a: argparse.Namespace) -> int:
    """Point the version's timeframe at it (an ensemble with the members it pins)."""
    m = read_manifest(resolve_version_dir(root, a.family, a.version))
    if m.timeframe is None:
        raise ManifestError(f"{a.family}/{a.version} names no timeframe in its feature service {m.feature_service!r}")
    versions = {a.family: m.version, **{str(f): str(v) for f, v in m.extra.get("members", {}).items()}}
    ev = promote(root, m.timeframe, versions, a.by, a.reason)
    print(ev.describe())
    return 0


def cmd_rollback(root: Path, a: argparse.Namespace) -> int:
    """Restore the versions the timeframe's newest promotion replaced."""
    ev = rollback(root, a.timeframe, a.by, a.reason)
    print(ev.describe())
    return 0


def problems(root: Path, timeframe: str | None = None) -> list[str]:
    """Return every integrity problem of the registry (of one timeframe when given)."""
    out: list[str] = []
    for fam in families(root):
        for version in list_versions(root, fam):
            try:
                verify(root / fam / version)
            except ManifestError as exc:
                out.append(str(exc))
    tfs = {tf for fam in families(root) for tf in pointed_timeframes(root, fam)}
    for tf in sorted(tfs if timeframe is None else {timeframe}):
        if tf not in pointed_timeframes(root, "ensemble"):
            continue  # members or a policy without an ensemble: that timeframe's flow runs features only
        try:
            ens = read_manifest(resolve_version_dir(root, "ensemble", timeframe=tf))
        except ManifestError as exc:
            out.append(str(exc))
            continue
        for fam, version in ens.extra.get("members", {}).items():
            try:
                resolve_version_dir(root, str(fam), str(version), timeframe=tf)
            except ManifestError as exc:
                out.append(f"ensemble {ens.version} ({tf}): {exc}")
        for policy in (f for f in families(root) if f.startswith(POLICY_PREFIX)):
            pointed = pointed_timeframes(root, policy).get(tf)
            if pointed is not None:
                try:
                    check_policy(read_manifest(root / policy / pointed), ens)
                except ManifestError as exc:
                    out.append(str(exc))
    return out


def cmd_verify(root: Path, a: argparse.Namespace) -> int:
    """Re-hash every version; check each timeframe's deployment is of one timeframe."""
    found = problems(root, a.timeframe)
    for p in found:
        print(f"problem: {p}")
    print(f"registry {root}: {'OK' if not found else f'{len(found)} problem(s)'}")
    return 1 if found else 0


def cmd_events(root: Path, a: argparse.Namespace) -> int:
    """Print the newest events of the registry's log."""
    for ev in read_events(root, a.timeframe)[-a.last:]:
        print(ev.describe())
    return 0


def parser() -> argparse.ArgumentParser:
    """Return the command line parser (see module docstring)."""
    p = argparse.ArgumentParser(prog="python -m training.registry", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--registry", type=Path, help="registry root (default: the settings' scoring.registry)")
    p.add_argument("--config", help="settings YAML (else $CRYPTOSTREAM_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="every version, its timeframe and whether it is current")
    ls.add_argument("--timeframe")
    ls.add_argument("--family")
    show = sub.add_parser("show", help="a version's lineage")
    show.add_argument("family")
    show.add_argument("version", nargs="?", default="latest")
    show.add_argument("--timeframe", help="whose latest to show (needed when the family has several)")
    pro = sub.add_parser("promote", help="make a version current for its timeframe")
    pro.add_argument("family")
    pro.add_argument("version")
    rb = sub.add_parser("rollback", help="undo the timeframe's newest promotion")
    rb.add_argument("--timeframe", required=True)
    for s in (pro, rb):
        s.add_argument("--by", default="python -m training.registry", help="who does it (the event log)")
        s.add_argument("--reason", default="", help="why (the event log)")
    ver = sub.add_parser("verify", help="re-hash every version and check each timeframe's deployment")
    ver.add_argument("--timeframe")
    ev = sub.add_parser("events", help="the log of promotions, rollbacks and retraining steps")
    ev.add_argument("--timeframe")
    ev.add_argument("--last", type=int, default=20)
    return p


COMMANDS = {"list": cmd_list, "show": cmd_show, "promote": cmd_promote, "rollback": cmd_rollback,
            "verify": cmd_verify, "events": cmd_events}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 0 on success, 1 on problems found, 2 on a usage or registry error."""
    a = parser().parse_args(argv)
    try:
        root = a.registry if a.registry is not None else load_settings(a.config).registry_root()
        return COMMANDS[a.command](Path(root), a)
    except (SettingsError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
