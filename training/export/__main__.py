"""Re-verify a registered model and print its manifest.

    python -m training.export FAMILY [--version V] [--registry DIR] [--config FILE]

Checks every file against its sha256 in the manifest (and that no stray file is
present), that the recorded parity is within its tolerance, and that an ensemble's
member versions are still in the registry; prints the manifest as JSON.  Exit
code 0 when all hold, 1 when a check fails, 2 on a bad command line or settings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from flows.cli import HelpFormatter
from flows.settings import SettingsError, load_settings
from inference.manifest import ManifestError, resolve_version_dir, verify
from training.registry import default_root


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter)
    p.add_argument("family")
    p.add_argument("--version", default="latest")
    p.add_argument("--timeframe", help="whose latest (needed when the family has versions of several)")
    p.add_argument("--registry", type=Path)
    p.add_argument("--config")
    a = p.parse_args(argv)
    try:
        root = a.registry or default_root(load_settings(a.config).data_dir)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        d = resolve_version_dir(root, a.family, a.version, timeframe=a.timeframe)
        m = verify(d)
        if not m.parity.max_abs_diff <= m.parity.tolerance:
            raise ManifestError(f"{m.family}/{m.version}: recorded parity {m.parity.max_abs_diff:.3g} "
                                f"exceeds its tolerance {m.parity.tolerance:g}")
        for fam, version in m.extra.get("members", {}).items():
            verify(resolve_version_dir(root, fam, version))
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(m.to_json())
    print(f"ok: {m.family}/{m.version} at {d}: {len(m.files)} files match their sha256; parity "
          f"{m.parity.max_abs_diff:.2e} <= {m.parity.tolerance:g} on {m.parity.rows} rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
