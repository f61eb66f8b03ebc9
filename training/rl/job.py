"""The typed job of ``python -m training.rl``: what to train, export or evaluate, and where.

:func:`training.rl.__main__.main` builds one from the command line and the settings
(the registry, work and log directories resolved there); the logic takes it, never
an ``argparse.Namespace``.  Standard library only, so the CLI starts without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Level = Literal["strategic", "tactical", "execution"]  # as training.rl.agents.Level, without torch


@dataclass(frozen=True)
class RlJob:
    """One ``train`` / ``export`` / ``evaluate`` run of a level (``hierarchy``: evaluate only)."""

    command: Literal["train", "export", "evaluate"]
    level: Level | Literal["hierarchy"]
    registry: Path
    work_dir: Path
    log_dir: Path
    data_dir: Path | None = None
    symbols: tuple[str, ...] | None = None
    timeframe: str | None = None
    start: str | None = None
    end: str | None = None
    regime_dir: Path | None = None
    regime_model: str | None = None  # strategic: 'rules', 'latest' or a regime.json (flows.operators.regime)
    seed: int = 7
    timesteps: int | None = None
    quick: bool = False
    version: str = "latest"
    report_dir: Path = Path("training/reports/rl")
    no_progress: bool = False
    ensemble_prob: bool = False  # tactical: observe the ensemble's point-in-time probability (training.rl.signal)
    ensemble_version: str = "latest"  # the registry's ensemble version it comes from
