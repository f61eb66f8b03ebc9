"""Retention of the ``local`` profile: drop whole parquet files older than a table's policy.

The same rule as ``drop_chunks`` on TimescaleDB: a file goes only when every row it can hold
is older than ``now - keep``: a history file ``<SYMBOL>-YYYY-MM.parquet`` after the end of its
month, a decision file ``YYYY-MM-DD.parquet`` after the end of its day, a dead-letter file
``w<N>.jsonl`` when nothing was appended to it for ``keep`` (a worker appends to its file for
as long as it runs).  :data:`DEFAULT_KEEP` mirrors ``retention_policies`` of migration 0007
(``tests/integration/test_retention_policies.py`` compares them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dateutil.relativedelta import relativedelta

from flows.feature_groups import daily_groups, group

_DAILY = tuple(g.table for g in daily_groups())  # the daily feature groups' tables (flows/feature_groups.py)
_REGIME = group("regime").table  # the regime group's table: kept (migration 0010 gives it no policy)
# None = never dropped.  Bars are the training history, orders/fills/portfolio the audit trail; the daily
# groups are a few hundred rows a year, kept like the bars (migration 0009 gives them no policy).
DEFAULT_KEEP: dict[str, str | None] = {
    "bars": None, "bar_features": "365 days", "cross_asset_features": "365 days",
    "predictions": "180 days", "orders": None, "fills": None, "portfolio_state": None,
    "risk_events": None, "dead_letters": "30 days", **dict.fromkeys(_DAILY), _REGIME: None,
}
_INTERVAL_RE = re.compile(r"^\s*(\d+)\s*(minute|hour|day|week|month|year)s?\s*$", re.IGNORECASE)
_MONTH_FILE = re.compile(r"-(\d{4})-(\d{2})\.parquet$")
_DAY_FILE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})\.parquet$")
_HISTORY = ("bars", "bar_features", "cross_asset_features", *_DAILY, _REGIME)


class RetentionError(ValueError):
    """A table or an interval the local retention does not know."""


def parse_interval(text: str) -> relativedelta:
    """Parse ``'90 days'``, ``'2 weeks'``, ``'6 months'``, ... (PostgreSQL's spelling, one unit)."""
    m = _INTERVAL_RE.match(text)
    if not m:
        raise RetentionError(f"--older-than {text!r}: give a count and one unit, e.g. '90 days' "
                             "(minutes, hours, days, weeks, months, years)")
    n, unit = int(m.group(1)), m.group(2).lower()
    if n <= 0:
        raise RetentionError(f"--older-than {text!r}: must be positive")
    return relativedelta(**{unit + "s": n})


def _files(data_dir: Path, table: str) -> Iterable[tuple[Path, datetime]]:
    """Yield each file of ``table`` with the end of the time its rows can hold."""
    if table in _HISTORY:
        for d in sorted((data_dir / "offline").glob(f"{table}_*")):
            for f in sorted(d.glob("*.parquet")):
                if m := _MONTH_FILE.search(f.name):
                    start = datetime(int(m.group(1)), int(m.group(2)), 1, tzinfo=UTC)
                    yield f, start + relativedelta(months=1)
    elif table == "dead_letters":
        for f in sorted((data_dir / "dead_letters").glob("*.jsonl")):
            yield f, datetime.fromtimestamp(f.stat().st_mtime, UTC)
    else:
        for f in sorted((data_dir / "decisions" / table).glob("*.parquet")):
            if m := _DAY_FILE.match(f.name):
                yield f, datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)), tzinfo=UTC) + timedelta(days=1)


def drop_old_files(data_dir: Path, table: str, older_than: str, now: datetime,
                   dry_run: bool = False) -> list[Path]:
    """Delete (or with ``dry_run`` list) the files of ``table`` whose rows all lie before ``now - older_than``."""
    if table not in DEFAULT_KEEP:
        raise RetentionError(f"{table!r} is not a table of the local profile (tables: {', '.join(DEFAULT_KEEP)})")
    cutoff = now - parse_interval(older_than)
    old = [f for f, end in _files(Path(data_dir), table) if end <= cutoff]
    if not dry_run:
        for f in old:
            f.unlink()
    return old


def retention(data_dir: Path, table: str | None, older_than: str | None, all_default: bool,
              dry_run: bool = False, now: datetime | None = None) -> list[str]:
    """Apply one rule, or every rule of :data:`DEFAULT_KEEP`; return report lines like ``infra.db retention``."""
    now = now or datetime.now(UTC)
    verb = "would drop" if dry_run else "dropped"
    rules = sorted(DEFAULT_KEEP.items()) if all_default else [(str(table), older_than)]
    lines = []
    for name, keep in rules:
        if keep is None:
            lines.append(f"{name}: kept (no retention policy)")
            continue
        files = drop_old_files(data_dir, name, keep, now, dry_run)
        detail = ": " + ", ".join(f.name for f in files) if files else ""
        lines.append(f"{name}: {verb} {len(files)} file(s) older than {keep}{detail}")
    return lines
