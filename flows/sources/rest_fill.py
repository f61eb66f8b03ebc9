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
validates REST replies like websocket messages.  A reply is read as untrusted input: a row
the fill cannot use (not an object, a missing field, an id, time or flag of the wrong type
or out of range, a quantity that is not a plain decimal, an aggregate of more than
:data:`MAX_AGG_TRADES` trades) comes back as a :data:`~flows.operators.parse.REST_REFUSED`
message, which the parser turns into a dead letter with the reason; a reply that is not a
list (an error object, junk) or a ccxt error ends that fill as failed, with a warning and
such a dead letter, and the ids it missed stay a hole for :mod:`flows.sources.id_gaps`.
A historical trade's price, quantity, time and flag go to the parser unchanged.

Transient errors (ccxt's ``NetworkError``: a timeout, a refused or reset connection, HTTP
5xx, 429 and 418, Binance's "overloaded") are retried first, up to :attr:`FillRetry.attempts` calls per request
with a doubling pause (``exchange.fill_retry``); only when they are used up does the fill
fail as above, the dead letter naming the attempts and the last error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import ccxt
import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flows.operators.bars import UNITS
from flows.operators.parse import (
    MAX_TRADE_ID,
    PRICE_RANGE,
    QTY_RANGE,
    REST_REFUSED,
    decimal_refusal,
)

log = logging.getLogger(__name__)

PAGE = 1000  # the most rows aggTrades and historicalTrades return
MAX_AGG_TRADES = 100_000  # trades one aggregate may hold (one taker order at one price); more is refused
_AGG_FIELDS = ("a", "p", "q", "f", "l", "T", "m")
_HISTORICAL_FIELDS = ("id", "price", "qty", "time", "isBuyerMaker")


class FillRetry(BaseModel):
    """How often a REST call of the fill is tried after a transient error (``CRYPTOSTREAM_EXCHANGE__FILL_RETRY__<FIELD>``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    attempts: int = Field(5, ge=1, le=20, description="calls per REST request at most (1 = no retry)")
    backoff_s: float = Field(0.5, ge=0.0, le=60.0, description="pause after the first failure; doubles after each")
    backoff_max_s: float = Field(8.0, ge=0.0, le=300.0, description="longest pause between attempts")

    @model_validator(mode="after")
    def _ordered(self) -> FillRetry:
        if self.backoff_max_s < self.backoff_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s}) must be at least backoff_s ({self.backoff_s})")
        return self

    def pauses(self) -> Iterator[float]:
        """Yield the pause before each retry (``attempts - 1`` of them)."""
        pause = self.backoff_s
        for _ in range(self.attempts - 1):
            yield min(pause, self.backoff_max_s)
            pause *= 2


def transient(exc: BaseException) -> bool:
    """Return whether a ccxt error may pass if the call is tried again (network, timeout, 5xx, 429).

    ccxt's ``OperationFailed`` family (network errors, timeouts, 5xx, 418/429 and Binance's
    -1000/-1001/-1003/-1006/-1007), less a bad nonce; and Binance's -1008 "server is
    overloaded", which ccxt maps to a plain ``ExchangeError``.
    """
    if isinstance(exc, ccxt.InvalidNonce):
        return False
    return isinstance(exc, ccxt.OperationFailed) or _OVERLOADED in str(exc)


_OVERLOADED = '"code":-1008'


class FillFailed(Exception):
    """A REST reply the fill cannot read at all (not a list); the reason is the message."""


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
    def from_row(cls, row: Any) -> AggTrade:
        """Return the aggregate of a REST row (ccxt's raw ``publicGetAggTrades`` reply).

        Raises:
            ValueError: the row does not follow Binance's schema (the message says why).
        """
        if type(row) is not dict:
            raise ValueError(f"not a JSON object: {type(row).__name__}")
        if missing := [k for k in _AGG_FIELDS if k not in row]:
            raise ValueError(f"missing fields: {','.join(missing)}")
        for key in ("a", "f", "l", "T"):
            _check_int(row[key], key)
        first, last = row["f"], row["l"]
        if not first <= last < first + MAX_AGG_TRADES:
            raise ValueError(f"bad trade ids f..l: {first}..{last} (first <= last, at most {MAX_AGG_TRADES:,} trades)")
        if type(row["m"]) is not bool:
            raise ValueError(f"bad buyer-is-maker flag m: {row['m']!r} (JSON true or false)")
        for key, what, bounds in (("p", "price", PRICE_RANGE), ("q", "quantity", QTY_RANGE)):
            if (why := decimal_refusal(row[key], what, bounds)) is not None:
                raise ValueError(why)
        if units_of(row["q"]) < last - first + 1:
            raise ValueError(f"bad quantity: {row['q']!r} (less than a step of 1e-8 for each of its {last - first + 1} "
                             "trades)")
        return cls(row["a"], row["p"], row["q"], first, last, row["T"], row["m"])


def _check_int(value: Any, name: str) -> None:
    if type(value) is not int or not 0 <= value <= MAX_TRADE_ID:
        raise ValueError(f"bad {name}: {_short(value)} (a JSON integer from 0)")


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def refusal_message(market_id: str, endpoint: str, reason: str, reply: Any) -> bytes:
    """Return a :data:`~flows.operators.parse.REST_REFUSED` message: the parser makes it a dead letter."""
    doc = {"e": REST_REFUSED, "s": market_id, "endpoint": endpoint, "reason": f"{endpoint}: {reason}"}
    try:
        return orjson.dumps({**doc, "row": reply})
    except (TypeError, ValueError):  # a value JSON cannot carry (an integer beyond 64 bits, a lone surrogate)
        return orjson.dumps({**doc, "row": _short(reply, 2000).encode("utf-8", "replace").decode()})


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


def historical_message(market_id: str, row: Any) -> tuple[bytes, int]:
    """Return a ``historicalTrades`` row as a websocket trade message and its id.

    Only the id is checked here (the fill pages by it); price, quantity, time and flag go
    on unchanged, for the parser to accept or refuse like a websocket trade's.

    Raises:
        ValueError: not an object, a field missing, a bad id, a value JSON cannot carry.
    """
    if type(row) is not dict:
        raise ValueError(f"not a JSON object: {type(row).__name__}")
    if missing := [k for k in _HISTORICAL_FIELDS if k not in row]:
        raise ValueError(f"missing fields: {','.join(missing)}")
    _check_int(row["id"], "id")
    try:
        msg = orjson.dumps({"e": "trade", "E": row["time"], "s": market_id, "t": row["id"], "p": row["price"],
                            "q": row["qty"], "T": row["time"], "m": row["isBuyerMaker"], "M": True})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a value JSON cannot carry: {exc}") from None
    return msg, row["id"]


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
        retry: How transient errors are retried.
        sleep: Waits between retries (injected by tests that count the pauses).
    """

    def __init__(self, http_url: str | None, ws_url: str | None, api_key: str | None = None,
                 exchange: Any = None, retry: FillRetry | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        from flows.exchange.binance import make_binance

        if exchange is None:
            keys: dict[str, Any] = {"apiKey": api_key} if api_key else {}  # never logged
            exchange = make_binance(http_url, ws_url, enableRateLimit=True, **keys)
        self.exchange = exchange
        self.exact = api_key is not None
        self.retry = retry or FillRetry()
        self.sleep = sleep
        self.calls = 0
        self.retries = 0  # calls repeated after a transient error
        self.inexact = 0
        self.refused = 0  # rows refused
        self.failed = 0  # replies that were not a list, and ccxt errors
        self._refused: list[bytes] = []  # refusal messages not yet handed on
        self._gap = ""  # the ids the current fill is after, for its dead letter

    @property
    def method(self) -> str:
        """Return the REST endpoint the filler uses."""
        return "historicalTrades" if self.exact else "aggTrades"

    def first_id_since(self, market_id: str, since_ms: int) -> int | None:
        """Return the id of the first trade at or after ``since_ms`` (None: none, or the reply failed)."""
        self._gap = f"trades since {since_ms} ms"
        try:
            aggs, _ = self._aggs(market_id, {"symbol": market_id, "startTime": since_ms, "limit": 1})
        except FillFailed:
            return None
        return aggs[0].first_id if aggs else None

    def trades_from(self, market_id: str, from_id: int, until_id: int | None,
                    known: Mapping[int, int] | None = None, since_ms: int | None = None) -> list[bytes]:
        """Return the trades with ids in ``[from_id, until_id)`` (all there are if ``until_id`` is None).

        ``known`` holds the units of trades just before ``from_id`` that the stream delivered
        (an aggregate that began before the gap is split exactly with them); ``since_ms`` is a
        time at or before trade ``from_id`` (the last delivered trade's), which saves a search.
        With ``aggTrades`` the trades of the aggregate that holds ``until_id - 1`` are all
        returned, also those at or after ``until_id``: the stream's own copies of them are
        duplicates the deduper drops, and the split of the aggregate stays exact.  Rows the
        fill refused come back as refusal messages (:func:`refusal_message`); a failed reply ends the fill
        with what it had.
        """
        out: list[bytes] = []
        self._gap = f"trade ids {from_id}..{'' if until_id is None else until_id - 1}"
        try:
            if self.exact:
                self._historical(market_id, from_id, until_id, out)
            else:
                self._agg_from(market_id, from_id, until_id, known or {}, since_ms, out)
        except FillFailed:
            pass
        return out + self._take_refused()

    def trades_between(self, market_id: str, first_id: int, start_ms: int, end_ms: int,
                       known: Mapping[int, int]) -> list[bytes]:
        """Return the trades from ``first_id`` on, traded in ``[start_ms, end_ms]``, that ``known`` lacks.

        For holes in the stream (a trade sent corrupted, a message lost): ``known`` holds the
        units of the trades delivered around them.  Refused rows and failed replies: as
        :meth:`trades_from`.
        """
        out: list[bytes] = []
        self._gap = f"trade ids from {first_id} traded in {start_ms}..{end_ms} ms"
        try:
            if self.exact:
                last = max((i for i in known if i >= first_id), default=first_id)
                got: list[bytes] = []
                self._historical(market_id, first_id, last + 1, got)
                out = [m for m in got if orjson.loads(m)["t"] not in known]
            else:
                aggs, n = self._aggs(market_id, {"symbol": market_id, "startTime": start_ms, "endTime": end_ms,
                                                 "limit": PAGE})
                collected = list(aggs)
                while n == PAGE and aggs:  # more than a page in the window: go on by id (fromId takes no times)
                    aggs, n = self._aggs(market_id, {"symbol": market_id, "fromId": aggs[-1].agg_id + 1,
                                                     "limit": PAGE})
                    aggs = [a for a in aggs if a.ts <= end_ms]
                    collected.extend(aggs)
                self._expand(collected, known, first_id, market_id, out)
        except FillFailed:
            pass
        return out + self._take_refused()

    def _agg_from(self, market_id: str, from_id: int, until_id: int | None, known: Mapping[int, int],
                  since_ms: int | None, out: list[bytes]) -> None:
        agg_id = self._agg_id_of(market_id, from_id, since_ms)
        while agg_id is not None:
            aggs, n = self._aggs(market_id, {"symbol": market_id, "fromId": agg_id, "limit": PAGE})
            page = aggs
            if until_id is not None:
                aggs = [a for a in aggs if a.first_id < until_id]
            self._expand(aggs, known, from_id, market_id, out)
            if n < PAGE or len(aggs) < len(page) or not page or page[-1].agg_id < agg_id:
                break  # the last page, past until_id, nothing usable, or ids that do not grow
            agg_id = page[-1].agg_id + 1

    def _expand(self, aggs: list[AggTrade], known: Mapping[int, int], first_id: int, market_id: str,
                out: list[bytes]) -> None:
        msgs, inexact = expand(aggs, known, first_id, market_id)
        out.extend(msgs)
        self._warn_inexact(market_id, inexact)

    def _reply(self, market_id: str, endpoint: str, call: Any, params: dict[str, Any]) -> list[Any]:
        """Return the rows of one REST call; a reply that is not a list or a ccxt error raises FillFailed."""
        pauses = self.retry.pauses()
        tries = 0
        while True:
            self.calls += 1
            tries += 1
            try:
                rows = call(params)
            except ccxt.BaseError as exc:
                if transient(exc) and (pause := next(pauses, None)) is not None:
                    self.retries += 1
                    log.info("%s: %s %s: %s; retrying in %.1f s (attempt %d of %d)", market_id, endpoint,
                             type(exc).__name__, _short(str(exc), 120), pause, tries + 1, self.retry.attempts)
                    self.sleep(pause)
                    continue
                after = f" after {tries} attempts" if tries > 1 else ""
                reason, reply = f"request failed{after}: {type(exc).__name__}: {_short(str(exc))}", None
            else:
                if type(rows) is list:
                    return rows
                reason, reply = f"reply is not a list of rows but {type(rows).__name__}", rows
            break
        self.failed += 1
        if self._gap:
            reason += f"; unfilled: {self._gap}"
        log.warning("%s: REST gap fill failed, %s %s (the trades it would have filled stay missing)",
                    market_id, endpoint, reason)
        self._refused.append(refusal_message(market_id, endpoint, reason, reply))
        raise FillFailed(reason)

    def _aggs(self, market_id: str, params: dict[str, Any]) -> tuple[list[AggTrade], int]:
        """Return the valid aggregates of one ``aggTrades`` call and its number of rows (refused rows are kept)."""
        rows = self._reply(market_id, "aggTrades", self.exchange.publicGetAggTrades, params)
        out = []
        for row in rows:
            try:
                out.append(AggTrade.from_row(row))
            except ValueError as exc:
                self._refuse(market_id, "aggTrades", str(exc), row)
        return out, len(rows)

    def _refuse(self, market_id: str, endpoint: str, reason: str, row: Any) -> None:
        self.refused += 1
        self._refused.append(refusal_message(market_id, endpoint, reason, row))

    def _take_refused(self) -> list[bytes]:
        out, self._refused = self._refused, []
        return out

    def _agg_id_of(self, market_id: str, trade_id: int, since_ms: int | None) -> int | None:
        """Return the id of the aggregate holding ``trade_id`` (or the first one after it); None if none yet."""
        if since_ms is not None:
            aggs, n = self._aggs(market_id, {"symbol": market_id, "startTime": since_ms, "limit": PAGE})
            for a in aggs:
                if a.last_id >= trade_id:
                    return a.agg_id
            if n < PAGE:
                return None
        # Bisect the aggregate ids: aggregates and their trade ids grow together.
        latest, _ = self._aggs(market_id, {"symbol": market_id, "limit": 1})
        if not latest or latest[0].last_id < trade_id:
            return None
        lo, hi = -1, latest[0].agg_id  # the aggregate lo ends before trade_id; hi ends at or after it
        while hi - lo > 1:
            mid = (lo + hi) // 2
            rows, _ = self._aggs(market_id, {"symbol": market_id, "fromId": mid, "limit": 1})
            if rows and rows[0].last_id >= trade_id:
                hi = mid
            else:
                lo = mid
        return hi

    def _historical(self, market_id: str, from_id: int, until_id: int | None, out: list[bytes]) -> None:
        """Append the single trades ``[from_id, until_id)`` to ``out``, as websocket messages for the parser."""
        while until_id is None or from_id < until_id:
            rows = self._reply(market_id, "historicalTrades", self.exchange.publicGetHistoricalTrades,
                               {"symbol": market_id, "fromId": from_id, "limit": PAGE})
            top = None
            for r in rows:
                try:
                    msg, tid = historical_message(market_id, r)
                except ValueError as exc:
                    self._refuse(market_id, "historicalTrades", str(exc), r)
                    continue
                if until_id is not None and tid >= until_id:
                    return
                out.append(msg)
                top = tid if top is None else max(top, tid)
            if len(rows) < PAGE or top is None or top < from_id:
                break  # the last page, or nothing usable, or ids that do not grow
            from_id = top + 1

    def _warn_inexact(self, market_id: str, agg_ids: list[int]) -> None:
        if agg_ids:
            self.inexact += len(agg_ids)
            log.warning("%s: aggregated trades %s began before the gap with trades no longer remembered; their "
                        "missed trades' split of the quantity is a guess (set exchange.api_key for historicalTrades)",
                        market_id, agg_ids)
