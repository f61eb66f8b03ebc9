"""ccxt ``binance`` clients configured for the spot endpoints, optionally on another host.

Production and tests build their exchange the same way::

    make_binance()                                   # the real Binance, REST (sync)
    make_binance(pro=True)                           # the real Binance, ccxt.pro websockets
    make_binance("http://127.0.0.1:9000", pro=True)  # the replay exchange (infra/replay_exchange)

With a base URL, every URL in ccxt's ``urls["api"]`` (``public``/``private``
= ``/api/v3``, ``v1``, ``sapi``, ``fapi*`` ..., and ccxt.pro's ``ws`` map) keeps
its path and gets the replay server's scheme, host and port, so nothing can
reach the internet by accident: endpoints the replay does not implement answer
404 (ccxt raises ``ExchangeNotAvailable``).  The options keep ccxt to what the
replay implements and what a spot market-data client needs: markets from
``/api/v3/exchangeInfo`` only (no futures ``fapi``/``dapi`` exchangeInfo, no
margin ``sapi`` pairs, no currencies, which need keys anyway).
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import ccxt
import ccxt.async_support
import ccxt.pro

SPOT_OPTIONS: dict[str, Any] = {
    "defaultType": "spot",
    "fetchMarkets": {"types": ["spot"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
}


@functools.lru_cache(maxsize=2)
def _default_api_urls(pro: bool) -> dict[str, Any]:
    cls = ccxt.pro.binance if pro else ccxt.binance
    return dict(cls().urls["api"])


def _rebase(url: str, http_base: str, ws_base: str) -> str:
    parts = urlsplit(url)
    base = urlsplit(ws_base if parts.scheme in ("ws", "wss") else http_base)
    return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, parts.fragment))


def _rebase_tree(tree: dict[str, Any], http_base: str, ws_base: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out[key] = _rebase_tree(value, http_base, ws_base)
        elif isinstance(value, str):
            out[key] = _rebase(value, http_base, ws_base)
    return out


def ws_base_for(http_base: str) -> str:
    """Return the websocket base on the same host and port: ``http://h:p`` -> ``ws://h:p``."""
    parts = urlsplit(http_base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def binance_urls(http_base: str, ws_base: str | None = None, *, pro: bool = True) -> dict[str, Any]:
    """Return ccxt's binance ``urls["api"]`` with every URL moved onto the given bases.

    Args:
        http_base: REST base such as ``http://127.0.0.1:9000``.
        ws_base: Websocket base; default: ``http_base`` with a ws scheme.
        pro: Include ccxt.pro's ``ws`` URLs (``ws.spot`` -> ``<ws_base>/ws``).
    """
    return _rebase_tree(_default_api_urls(pro), http_base.rstrip("/"), (ws_base or ws_base_for(http_base)).rstrip("/"))


def make_binance(
    http_base: str | None = None,
    ws_base: str | None = None,
    *,
    pro: bool = False,
    asyncio_mode: bool = False,
    **config: Any,
) -> ccxt.Exchange:
    """Return a ccxt binance client for spot market data.

    Args:
        http_base: The replay exchange's base URL; None = the real Binance.
        ws_base: Websocket base URL; default derived from ``http_base``.
        pro: Return a ``ccxt.pro.binance`` (asyncio, websockets).
        asyncio_mode: Return a ``ccxt.async_support.binance`` (REST with asyncio);
            implied by ``pro``.
        **config: Further ccxt settings (``enableRateLimit``, ``timeout``,
            ``options`` merged over :data:`SPOT_OPTIONS`, ``apiKey`` ...).
    """
    options = {**SPOT_OPTIONS, **config.pop("options", {})}
    settings: dict[str, Any] = {"options": options, **config}
    if http_base is not None:
        urls = dict(settings.pop("urls", {}))
        urls["api"] = {**binance_urls(http_base, ws_base, pro=pro), **urls.get("api", {})}
        settings["urls"] = urls
    if pro:
        return ccxt.pro.binance(settings)
    if asyncio_mode:
        return ccxt.async_support.binance(settings)
    return ccxt.binance(settings)
