"""Markdown rendering for the reports: number formats and tables.

The models' walk-forward report (:mod:`training.report`) and the RL evaluation
(:mod:`training.rl.evaluate`, :mod:`training.rl.hierarchy_report`) render their
tables here.  Two number formats, as each report has always printed them: fixed
decimals per column (:func:`fixed`) and four significant digits (:func:`short`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def fixed(v: Any, digits: int = 4) -> str:
    """Return a float with ``digits`` decimals (``n/a`` when not finite); anything else as ``str``."""
    if isinstance(v, (float, np.floating)):
        return "n/a" if not np.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def short(v: Any) -> str:
    """Return a float with four significant digits (scientific below 1e-3); anything else as ``str``."""
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Return a markdown table of already formatted cells."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def md_table(df: pd.DataFrame, cols: Sequence[str], digits: Mapping[str, int] | None = None) -> str:
    """Return a markdown table of ``cols`` of ``df`` (fixed decimals per column, ``n`` as a count)."""
    d = {"sharpe": 2, "sharpe_gross": 2, "turnover": 3, "n": 0, **(digits or {})}
    return table(cols, ([fixed(r[c], d.get(c, 4)) if c != "n" else f"{int(r[c]):,}" for c in cols]
                        for _, r in df.iterrows()))


def markdown_table(rows: Mapping[str, Mapping[str, Any]], first: str = "strategy") -> str:
    """Return a markdown table: one row per key, one column per metric (the union, first-seen order)."""
    cols = list(dict.fromkeys(c for r in rows.values() for c in r))
    return table([first, *cols], ([name, *(short(r[c]) if c in r else "-" for c in cols)]
                                  for name, r in rows.items()))
