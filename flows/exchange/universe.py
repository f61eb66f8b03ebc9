"""The trading universe: an explicit symbol list, or a pairlist from the exchange's markets.

A pairlist (freqtrade's term) is built once at start: the exchange's spot
markets (ccxt ``load_markets``, ``/api/v3/exchangeInfo``) quoted in one
currency, ranked by 24 h quote volume (ccxt ``fetch_tickers``,
``/api/v3/ticker/24hr``), those below a floor dropped, the first ``size``
kept.  Ties in volume go by symbol, so the same exchange state gives the same
list.  ``CRYPTOSTREAM_UNIVERSE__SOURCE=pairlist
CRYPTOSTREAM_UNIVERSE__QUOTE=USDT CRYPTOSTREAM_UNIVERSE__SIZE=200`` replaces
``symbols`` with the 200 most traded USDT markets.  Only pydantic and the
standard library are imported at module level (``flows.settings`` imports this).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.errors import SettingsError

if TYPE_CHECKING:
    from flows.settings import Settings

_ASSET_RE = re.compile(r"^[A-Z0-9]{2,10}$")


class UniverseConfig(BaseModel):
    """Where the symbols come from: ``symbols`` (the explicit list) or ``pairlist``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    source: Literal["symbols", "pairlist"] = Field("symbols", description="symbols = the explicit list; pairlist = "
                                                   "the exchange's markets by quote currency and volume")
    quote: str = Field("USDT", description="quote currency of the pairlist's markets")
    size: int = Field(200, ge=1, le=1000, description="most symbols the pairlist keeps (by 24 h quote volume)")
    min_quote_volume: float = Field(0.0, ge=0.0, description="drop markets with less 24 h quote volume")
    exclude: tuple[str, ...] = Field((), description="symbols never in the pairlist, e.g. stablecoin pairs")

    @field_validator("quote")
    @classmethod
    def _quote(cls, value: str) -> str:
        if not _ASSET_RE.match(value):
            raise ValueError(f"{value!r} is not an asset code; accepted: capitals and digits, e.g. USDT")
        return value

    @field_validator("exclude", mode="before")
    @classmethod
    def _exclude(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value


def pairlist(exchange: Any, config: UniverseConfig) -> tuple[str, ...]:
    """Return the ``config.size`` most traded active spot markets quoted in ``config.quote``.

    Args:
        exchange: A ccxt client (sync), e.g. :func:`flows.exchange.binance.make_binance`.
        config: The pairlist's settings.

    Raises:
        SettingsError: if no market passes the filters (naming them).
    """
    markets = exchange.load_markets()
    excluded = set(config.exclude)
    candidates = {m["symbol"] for m in markets.values()
                  if m.get("spot") and m.get("active") is not False and m.get("quote") == config.quote
                  and m["symbol"] not in excluded}
    tickers = exchange.fetch_tickers()
    volume = {s: float(tickers[s].get("quoteVolume") or 0.0) for s in candidates if s in tickers}
    ranked = sorted((s for s, v in volume.items() if v >= config.min_quote_volume), key=lambda s: (-volume[s], s))
    if not ranked:
        raise SettingsError(f"universe: no {config.quote} market with 24 h quote volume >= "
                            f"{config.min_quote_volume} among {len(markets)} markets (universe.quote, "
                            "universe.min_quote_volume; env CRYPTOSTREAM_UNIVERSE__QUOTE, "
                            "CRYPTOSTREAM_UNIVERSE__MIN_QUOTE_VOLUME)")
    return tuple(ranked[:config.size])


def with_universe(settings: Settings, exchange: Any | None = None) -> Settings:
    """Return ``settings`` with ``symbols`` from the pairlist when ``universe.source`` is ``pairlist``.

    Args:
        settings: The run's settings; returned as they are for ``source=symbols``.
        exchange: ccxt client to ask; default one on ``exchange.http_url``.
    """
    if settings.universe.source == "symbols":
        return settings
    if exchange is None:
        from flows.exchange.binance import make_binance

        exchange = make_binance(settings.exchange.http_url, enableRateLimit=False)
    import ccxt

    try:
        symbols = pairlist(exchange, settings.universe)
    except ccxt.BaseError as exc:  # the exchange did not answer: say which setting points at it
        raise SettingsError(f"universe.source=pairlist could not list the exchange's markets "
                            f"(exchange.http_url, env CRYPTOSTREAM_EXCHANGE__HTTP_URL): {type(exc).__name__}") from None
    return settings.model_copy(update={"symbols": symbols})
