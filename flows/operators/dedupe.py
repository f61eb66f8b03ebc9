"""Drop repeated trade ids and put each batch in event-time order.

Exchanges resend trades after reconnects and replays, and websocket batches can
arrive slightly out of order.  The deduper remembers the last ``capacity`` trade
ids of a symbol (a set plus a FIFO to forget the oldest), returns duplicates to
the caller so they are counted and kept, and sorts the rest by (time, id).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from flows.records import Trade


class Deduper:
    """Per-symbol trade id memory."""

    def __init__(self, capacity: int = 200_000, state: dict[str, Any] | None = None) -> None:
        self.capacity = capacity
        ids = (state or {}).get("ids", ())
        self.order: deque[int] = deque(ids)
        self.seen: set[int] = set(ids)

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data."""
        return {"ids": list(self.order)}

    def update(self, trades: list[Trade]) -> tuple[list[Trade], list[Trade]]:
        """Return (new trades in (time, id) order, duplicates)."""
        seen, order = self.seen, self.order
        fresh: list[Trade] = []
        dups: list[Trade] = []
        for t in trades:
            if t.trade_id in seen:
                dups.append(t)
                continue
            seen.add(t.trade_id)
            order.append(t.trade_id)
            fresh.append(t)
        while len(order) > self.capacity:
            seen.discard(order.popleft())
        if any(fresh[i].ts > fresh[i + 1].ts for i in range(len(fresh) - 1)):
            fresh.sort(key=lambda t: (t.ts, t.trade_id))
        return fresh, dups
