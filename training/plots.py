"""Small PNG plots for the reports (matplotlib, headless).

Equity panels of the models' walk-forward report (:mod:`training.report`), equity
curves and shortfall histograms of the RL evaluation (:mod:`training.rl.evaluate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _pyplot() -> Any:
    """Return ``matplotlib.pyplot`` on the file-only Agg backend (imported late: matplotlib is slow to load)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_equity_panels(panels: Sequence[tuple[str, pd.DataFrame]], title: str, path: Path,
                       marks: Sequence[pd.Timestamp] = ()) -> None:
    """Write side-by-side panels of cumulative log-return curves (one column per model), in %.

    ``marks`` are drawn as thin grey vertical lines (e.g. fold starts); the legend is on the last panel.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(11, 3.6), dpi=80)
    styles = {"always_up": ":", "last_return_sign": ":", "ensemble_equal": "--"}
    for ax, (name, curves) in zip(axes, panels, strict=True):
        for m in curves.columns:
            ax.plot(curves.index, 100 * curves[m], styles.get(m, "-"), lw=1.4 if m == "ensemble" else 0.9,
                    label=m)
        for t in marks:
            ax.axvline(t, color="grey", lw=0.5, alpha=0.6)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("cumulative log return, %", fontsize=8)
    axes[-1].legend(fontsize=7, ncol=2, loc="best")
    fig.suptitle(title, fontsize=9)
    _save(plt, fig, path)


def plot_curves(curves: Mapping[str, np.ndarray], path: Path, title: str, xlabel: str) -> None:
    """Save equity curves (normalised to 1) as a small PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=80)
    for name, e in curves.items():
        ax.plot(e, label=name, lw=1.6 if name == "policy" else 0.9)
    ax.set(title=title, xlabel=xlabel, ylabel="equity (start = 1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    _save(plt, fig, path)


def plot_shortfalls(shortfalls: Mapping[str, np.ndarray], path: Path) -> None:
    """Save shortfall distributions (bps) as a small PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=80)
    lo, hi = np.percentile(np.concatenate(list(shortfalls.values())), [1, 99])
    for name, s in shortfalls.items():
        ax.hist(np.clip(s, lo, hi), bins=40, range=(lo, hi), alpha=0.5, label=f"{name} (mean {s.mean():.1f})")
    ax.set(title="implementation shortfall per parent order", xlabel="bps of arrival notional", ylabel="orders")
    ax.legend(fontsize=7)
    _save(plt, fig, path)
