"""Fetch missed trades from Binance's REST API: public aggregated trades, or single trades with a key.

Two ways to fill a gap of trade ids, both through ccxt's ``binance`` client:

* ``aggTrades`` (public, no key; weight 4).  An aggregated trade ``{a, p, q, f, l, T, m}``
  covers the trades ``f..l`` of one taker order at one price and one time, so each of its
  trades has price ``p``, time ``T`` and taker side ``m``; only the split of ``q`` among
  them is unknown.  :func:`expand` gives the trades of an aggregate that the stream
  missed the rest of ``q`` (what the stream's own trades of that aggregate did not
  carry), split in whole steps of 1e-8.  The bar builder sums volumes exactly in those
  steps (:mod:`flows.operators.bars`), so every bar field (OHLC, volume, quote volume,
  trade count ``l - f + 1``, taker buy volume, VWAP), and hence every feature, equals the
  one built from the single trades.  The one case it cannot reconstruct: an aggregate
  that straddles the start of the gap and whose earlier trades the stream delivered but
  no longer remembers (:attr:`TradeFiller.inexact` counts them, a warning names them).
* ``historicalTrades`` (an API key, read-only is enough; weight 25): the single trades.

Either way the trades come back as websocket trade messages, so the flow's one parser
validates REST replies like websocket messages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import orjson

from flows.operators.bars import UNITS

log = logging.getLogger(__name__)

PAGE = 1000  # the most rows aggTrades and historicalTrades return


class AggTrade(NamedTuple):
    """One row of ``GET /api/v3/aggTrades``."""

    agg_id: int
    price: str
    qty: str
    first_id: int
    last_id: int
    ts: int
    buyer_is_maker: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AggTrade:
        """Return the aggregate of a REST row (ccxt's raw ``publicGetAggTrades`` reply)."""
        return cls(int(row["a"]), str(row["p"]), str(row["q"]), int(row["f"]), int(row["l"]), int(row["T"]),
                   bool(row["m"]))


def units_of(qty: str | float) -> int:
    """Return a quantity in steps of 1e-8 (as the bar builder counts it)."""
    return round(float(qty) * UNITS)


def units_text(units: int) -> str:
    """Return the plain decimal text of ``units`` steps of 1e-8 (``150000000`` -> ``"1.50000000"``)."""
    whole, frac = divmod(units, UNITS)
    return f"{whole}.{frac:08d}"


def trade_message(market_id: str, trade_id: int, ts: int, price: str, qty: str, buyer_is_maker: bool) -> bytes:
    """Return a trade as Binance's websocket sends it (the flow's parser reads both)."""
    return orjson.dumps({"e": "trade", "E": ts, "s": market_id, "t": trade_id, "p": price, "q": qty, "T": ts,
                         "m": buyer_is_maker, "M": True})


def trade_docs(msgs: Iterable[bytes | str]) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of websocket messages (a combined stream's ``data``), skipping anything else."""
    for msg in msgs:
        try:
            doc = orjson.loads(msg)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            doc = doc.get("data", doc)
            if isinstance(doc, dict):
                yield doc


def known_quantities(msgs: Iterable[bytes | str]) -> dict[int, int]:
    """Return ``{trade id: units}`` of the trade messages among ``msgs`` (others are skipped)."""
    out: dict[int, int] = {}
    for doc in trade_docs(msgs):
        if type(doc.get("t")) is int and isinstance(doc.get("q"), str):
            try:
                out[doc["t"]] = units_of(doc["q"])
            except ValueError:
                continue
    return out


def expand(aggs: Iterable[AggTrade], known: Mapping[int, int], first_missing: int, market_id: str,
           ) -> tuple[list[bytes], list[int]]:
    """Return the trades of ``aggs`` the stream missed, as websocket messages, and the inexact aggregates.

    Every id ``>= first_missing`` of an aggregate that is not in ``known`` (trade id ->
    units the stream delivered) is missed; the missed trades share the aggregate's quantity
    less the known trades' units, in whole units as evenly as possible (each gets at least
    one unit when the remainder allows).  An aggregate with an id below ``first_missing``
    that ``known`` lacks cannot be split exactly: its agg id is returned in the second list.
    """
    out: list[bytes] = []
    inexact: list[int] = []
    for agg in aggs:
        if agg.last_id < first_missing:
            continue
        ids = range(agg.first_id, agg.last_id + 1)
        missed = [i for i in ids if i >= first_missing and i not in known]
        if not missed:
            continue
        if any(i < first_missing and i not in known for i in ids):
            inexact.append(agg.agg_id)
        rest = units_of(agg.qty) - sum(known[i] for i in ids if i in known)
        share, extra = divmod(max(rest, 0), len(missed))
        for k, tid in enumerate(missed):
            qty = units_text(share + (1 if k < extra else 0))
            out.append(trade_message(market_id, tid, agg.ts, agg.price, qty, agg.buyer_is_maker))
    return out, inexact


class TradeFiller:
    """Fetch trades by id through ccxt: ``aggTrades`` without a key, ``historicalTrades`` with one.

    Args:
        http_url: REST base (None: Binance).
        ws_url: Websocket base, for ccxt's URL map.
        api_key: A Binance API key (read-only is enough) for the single-trade fill, or None.
        exchange: A ccxt ``binance`` client to use instead of building one.
    """

    def __init__(self, http_url: str | None, ws_url: str | None, api_key: str | None = None,
                 exchange: Any = None) -> None:
        from flows.exchange.binance import make_binance

        if exchange is None:
            keys: dict[str, Any] = {"apiKey": api_key} if api_key else {}  # never logged
            exchange = make_binance(http_url, ws_url, enableRateLimit=True, **keys)
        self.exchange = exchange
        self.exact = api_key is not None
        self.calls = 0
        self.inexact = 0

    @property
    def method(self) -> str:
        """Return the REST endpoint the filler uses."""
        return "historicalTrades" if self.exact else "aggTrades"

    def first_id_since(self, market_id: str, since_ms: int) -> int | None:
        """Return the id of the first trade at or after ``since_ms``."""
        rows = self._agg({"symbol": market_id, "startTime": since_ms, "limit": 1})
        return int(rows[0]["f"]) if rows else None

    def trades_from(self, market_id: str, from_id: int, until_id: int | None,
                    known: Mapping[int, int] | None = None, since_ms: int | None = None) -> list[bytes]:
        """Return the trades with ids in ``[from_id, until_id)`` (all there are if ``until_id`` is None).

        ``known`` holds the units of trades just before ``from_id`` that the stream delivered
        (an aggregate that began before the gap is split exactly with them); ``since_ms`` is a
        time at or before trade ``from_id`` (the last delivered trade's), which saves a search.
        With ``aggTrades`` the trades of the aggregate that holds ``until_id - 1`` are all
        returned, also those at or after ``until_id``: the stream's own copies of them are
        duplicates the deduper drops, and the split of the aggregate stays exact.
        """
        if self.exact:
            return self._historical(market_id, from_id, until_id)
        known = known or {}
        agg_id = self._agg_id_of(market_id, from_id, since_ms)
        out: list[bytes] = []
        while agg_id is not None:
            rows = self._agg({"symbol": market_id, "fromId": agg_id, "limit": PAGE})
            aggs = [AggTrade.from_row(r) for r in rows]
            if until_id is not None:
                aggs = [a for a in aggs if a.first_id < until_id]
            msgs, inexact = expand(aggs, known, from_id, market_id)
            out.extend(msgs)
            self._warn_inexact(market_id, inexact)
            if len(rows) < PAGE or len(aggs) < len(rows):
                break
            agg_id = aggs[-1].agg_id + 1
        return out

    def trades_between(self, market_id: str, first_id: int, start_ms: int, end_ms: int,
                       known: Mapping[int, int]) -> list[bytes]:
        """Return the trades from ``first_id`` on, traded in ``[start_ms, end_ms]``, that ``known`` lacks.

        For holes in the stream (a trade sent corrupted, a message lost): ``known`` holds the
        units of the trades delivered around them.
        """
        if self.exact:
            last = max((i for i in known if i >= first_id), default=first_id)
            return [m for m in self._historical(market_id, first_id, last + 1) if orjson.loads(m)["t"] not in known]
        rows = self._agg({"symbol": market_id, "startTime": start_ms, "endTime": end_ms, "limit": PAGE})
        collected = list(rows)
        while len(rows) == PAGE:  # more than a page in the window: go on by id (fromId takes no times)
            page = self._agg({"symbol": market_id, "fromId": int(rows[-1]["a"]) + 1, "limit": PAGE})
            rows = [r for r in page if int(r["T"]) <= end_ms]
            collected.extend(rows)
        msgs, inexact = expand((AggTrade.from_row(r) for r in collected), known, first_id, market_id)
        self._warn_inexact(market_id, inexact)
        return msgs

    def _agg(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls += 1
        return self.exchange.publicGetAggTrades(params)

    def _agg_id_of(self, market_id: str, trade_id: int, since_ms: int | None) -> int | None:
        """Return the id of the aggregate holding ``trade_id`` (or the first one after it); None if none yet."""
        if since_ms is not None:
            rows = self._agg({"symbol": market_id, "startTime": since_ms, "limit": PAGE})
            for r in rows:
                if int(r["l"]) >= trade_id:
                    return int(r["a"])
            if len(rows) < PAGE:
                return None
        # Bisect the aggregate ids: aggregates and their trade ids grow together.
        latest = self._agg({"symbol": market_id, "limit": 1})
        if not latest or int(latest[0]["l"]) < trade_id:
            return None
        lo, hi = -1, int(latest[0]["a"])  # the aggregate lo ends before trade_id; hi ends at or after it
        while hi - lo > 1:
            mid = (lo + hi) // 2
            rows = self._agg({"symbol": market_id, "fromId": mid, "limit": 1})
            if rows and int(rows[0]["l"]) >= trade_id:
                hi = mid
            else:
                lo = mid
        return hi

    def _historical(self, market_id: str, from_id: int, until_id: int | None) -> list[bytes]:
        out: list[bytes] = []
        while until_id is None or from_id < until_id:
            self.calls += 1
            rows = self.exchange.publicGetHistoricalTrades({"symbol": market_id, "fromId": from_id, "limit": PAGE})
            for r in rows:
                tid = int(r["id"])
                if until_id is not None and tid >= until_id:
                    return out
                out.append(trade_message(market_id, tid, int(r["time"]), str(r["price"]), str(r["qty"]),
                                         bool(r["isBuyerMaker"])))
            if len(rows) < PAGE:
                break
            from_id = int(rows[-1]["id"]) + 1
        return out

    def _warn_inexact(self, market_id: str, agg_ids: list[int]) -> None:
        if agg_ids:
            self.inexact += len(agg_ids)
            log.warning("%s: aggregated trades %s began before the gap with trades no longer remembered; their "
                        "missed trades' split of the quantity is a guess (set exchange.api_key for historicalTrades)",
                        market_id, agg_ids)
