"""In-memory stores of the product: a kill switch that lives in the process.

For the decision logic without I/O (unit tests, notebooks, an embedded backtest) and for a
process that is its own operator: engaging and releasing are method calls, the status reads
are what :class:`flows.stores.base.KillSwitch` promises, and nothing survives the process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flows.stores.base import KillStatus


def _wall_ms() -> int:
    return int(time.time() * 1000)


class MemoryKillSwitch:
    """A kill switch held in memory (the :class:`flows.stores.base.KillSwitch` protocol)."""

    def __init__(self, clock_ms: Callable[[], int] = _wall_ms) -> None:
        """Create a released switch; ``clock_ms`` (ms) stamps ``since`` when it is engaged."""
        self._clock = clock_ms
        self._status = KillStatus(False)

    def active(self) -> bool:
        """Return whether the switch is engaged."""
        return self._status.active

    def status(self) -> KillStatus:
        """Return the switch's status with its reason and flatten flag."""
        return self._status

    def engage(self, reason: str, flatten: bool = False) -> None:
        """Engage the switch."""
        self._status = KillStatus(True, reason, bool(flatten), int(self._clock()))

    def release(self) -> None:
        """Release the switch."""
        self._status = KillStatus(False)

    def where(self) -> str:
        """Say where the switch is."""
        return "memory"

    def __repr__(self) -> str:
        return f"MemoryKillSwitch({self._status!r})"

