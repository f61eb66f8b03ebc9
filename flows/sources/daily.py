"""Daily providers (on-chain, funding, sentiment) behind one interface, and their point-in-time view.

A :class:`DailySource` answers ``raw(group, start, end)``: one row per UTC day ``date`` with the
group's raw columns (``flows.feature_groups.FeatureGroup.raw``).  Three kinds exist:

* :class:`FileSource`: the CSV files of a folder (``../shared/data/daily-onchain-sentiment``:
  ``fear_greed.csv``, ``hashrate.csv``, ``difficulty.csv``, ``funding_rates.csv``).
* :class:`HttpSource`: the public APIs a user configures: alternative.me's Fear & Greed
  endpoint (``GET /fng/?limit=0&format=json``), a chain-statistics API in blockchain.info's
  charts format (``GET /charts/hash-rate``, ``/charts/difficulty``), and funding rates through
  ccxt's ``fetch_funding_rate_history`` on Binance USD-M (``binanceusdm``), aggregated per day.
  Each base URL is a setting (``daily.*_url``), so tests point them at the local provider replay
  (``infra/replay_providers``) and the replay exchange with the same client code.
* any object with that method (tests use :class:`FrameSource` over a frame).

:class:`DailyFeed` adds the point in time: a value of day D is known at
``D + 1 day + publication lag`` (:func:`known_at`), so ``known_as_of(group, t)`` returns only the
rows known at ``t``.  This is the call other components use (the regime classifier, the flow's
side input, training).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import pandas as pd

from flows.errors import ProviderError
from flows.feature_groups import FeatureGroup, daily_groups, group

DAY = pd.Timedelta(days=1)
FILES: dict[str, tuple[str, dict[str, str]]] = {  # group -> (file, file column -> raw column)
    "fear_greed": ("fear_greed.csv", {"fng": "fng"}),
    "hash_rate": ("hashrate.csv", {"hashrate": "hashrate"}),
    "difficulty": ("difficulty.csv", {"difficulty": "difficulty"}),
    "funding": ("funding_rates.csv", {"funding_mean": "funding_mean", "funding_abs": "funding_abs"}),
}
CHARTS: dict[str, str] = {"hash_rate": "hash-rate", "difficulty": "difficulty"}  # group -> chart name
FUNDING_SYMBOL = "BTC/USDT:USDT"


class DailySource(Protocol):
    """A provider of daily raw values."""

    def raw(self, group: str, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> pd.DataFrame:
        """Return ``date`` (UTC midnight, ascending, unique) and the group's raw columns for days in [start, end)."""
        ...


def _frame(g: FeatureGroup, dates: Any, columns: Mapping[str, Any], where: str) -> pd.DataFrame:
    """Return a validated daily frame: UTC dates, float raw columns, one row per day (the last wins)."""
    df = pd.DataFrame({"date": pd.DatetimeIndex(pd.to_datetime(dates, utc=True)).floor("D").as_unit("ns"),
                       **{c: pd.to_numeric(pd.Series(v), errors="coerce").to_numpy(float) for c, v in columns.items()}})
    bad = df[list(g.raw)].isna().any(axis=1)
    if bad.any():
        row = df[bad].iloc[0]
        raise ProviderError(f"{where}: field {', '.join(c for c in g.raw if pd.isna(row[c]))} of "
                            f"{row['date'].date()} is not a number")
    return df.drop_duplicates("date", keep="last").sort_values("date").reset_index(drop=True)


def _clip(df: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.DataFrame:
    if start is not None:
        df = df[df["date"] >= pd.Timestamp(start).tz_convert("UTC").floor("D")]
    if end is not None:
        df = df[df["date"] < pd.Timestamp(end).tz_convert("UTC")]
    return df.reset_index(drop=True)


@dataclass
class FileSource:
    """Daily values from CSV files (``date`` plus value columns), one file per group."""

    folder: Path
    _cache: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def has(self, group_name: str) -> bool:
        """Return whether the group's file exists."""
        return (Path(self.folder) / FILES[group(group_name).name][0]).is_file()

    def raw(self, group_name: str, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None
            ) -> pd.DataFrame:
        """Return the group's daily rows in [start, end) from its file."""
        g = group(group_name)
        if g.name not in self._cache:
            name, cols = FILES[g.name]
            path = Path(self.folder) / name
            if not path.is_file():
                raise ProviderError(f"daily file {path} is missing (setting daily.folder)")
            csv = pd.read_csv(path, float_precision="round_trip")  # the exact values written, not within an ulp
            missing = [c for c in ("date", *cols) if c not in csv.columns]
            if missing:
                raise ProviderError(f"{path}: column {', '.join(missing)} is missing")
            self._cache[g.name] = _frame(g, csv["date"], {raw: csv[c] for c, raw in cols.items()}, str(path))
        return _clip(self._cache[g.name], start, end)


@dataclass
class FrameSource:
    """Daily values held in memory: group -> frame of ``date`` and raw columns (tests, perturbations)."""

    frames: dict[str, pd.DataFrame]

    def raw(self, group_name: str, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None
            ) -> pd.DataFrame:
        """Return the group's rows in [start, end)."""
        g = group(group_name)
        f = self.frames[g.name]
        return _clip(_frame(g, f["date"], {c: f[c] for c in g.raw}, f"frame {g.name}"), start, end)


def get_json(url: str, params: Mapping[str, Any], headers: Mapping[str, str], timeout: float) -> Any:
    """GET a JSON document; an HTTP error or a non-JSON body becomes a :class:`ProviderError` naming the URL."""
    full = f"{url}?{urlencode(params)}" if params else url
    try:
        with urlopen(Request(full, headers=dict(headers)), timeout=timeout) as r:  # noqa: S310 (configured URL)
            body = r.read()
    except HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace")
        raise ProviderError(f"GET {url}: HTTP {exc.code}: {detail}") from None
    except (URLError, TimeoutError, OSError) as exc:
        raise ProviderError(f"GET {url}: {exc}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise ProviderError(f"GET {url}: reply is not JSON: {body[:120]!r}") from None


def parse_fear_greed(doc: Any, where: str = "fear & greed reply") -> pd.DataFrame:
    """Parse alternative.me's ``/fng/`` reply: ``{"data": [{"value", "timestamp"}...], "metadata": {"error"}}``."""
    if not isinstance(doc, dict):
        raise ProviderError(f"{where}: expected an object, got {type(doc).__name__}")
    err = (doc.get("metadata") or {}).get("error")
    if err:
        raise ProviderError(f"{where}: provider error: {err}")
    data = doc.get("data")
    if not isinstance(data, list):
        raise ProviderError(f"{where}: field data is missing or not a list")
    for i, d in enumerate(data):
        for f in ("value", "timestamp"):
            if not isinstance(d, dict) or f not in d:
                raise ProviderError(f"{where}: field data[{i}].{f} is missing")
    ts = pd.to_numeric(pd.Series([d["timestamp"] for d in data], dtype=object), errors="coerce")
    if ts.isna().any():
        raise ProviderError(f"{where}: field data[{int(ts.isna().to_numpy().argmax())}].timestamp is not a number")
    return _frame(group("fear_greed"), pd.to_datetime(ts.astype("int64"), unit="s", utc=True),
                  {"fng": [d["value"] for d in data]}, where)


def parse_chart(doc: Any, group_name: str, where: str = "chart reply") -> pd.DataFrame:
    """Parse a blockchain.info charts reply: ``{"status": "ok", "values": [{"x": unix s, "y": value}...]}``."""
    g = group(group_name)
    if not isinstance(doc, dict):
        raise ProviderError(f"{where}: expected an object, got {type(doc).__name__}")
    if doc.get("status", "ok") != "ok" or "error" in doc:
        raise ProviderError(f"{where}: provider error: {doc.get('error') or doc.get('status')}")
    values = doc.get("values")
    if not isinstance(values, list):
        raise ProviderError(f"{where}: field values is missing or not a list")
    for i, v in enumerate(values):
        if not isinstance(v, dict) or "x" not in v or "y" not in v:
            raise ProviderError(f"{where}: field values[{i}].x/y is missing")
    x = pd.to_numeric(pd.Series([v["x"] for v in values], dtype=object), errors="coerce")
    if x.isna().any():
        raise ProviderError(f"{where}: field values[{int(x.isna().to_numpy().argmax())}].x is not a number")
    return _frame(g, pd.to_datetime(x.astype("int64"), unit="s", utc=True), {g.raw[0]: [v["y"] for v in values]},
                  where)


def daily_funding(history: list[dict[str, Any]], where: str = "funding history") -> pd.DataFrame:
    """Aggregate ccxt funding-rate history (``timestamp`` ms, ``fundingRate``) per UTC day: mean and mean |rate|."""
    if not history:
        return pd.DataFrame({"date": pd.Series([], dtype="datetime64[ns, UTC]"), "funding_mean": [],
                             "funding_abs": []})
    for i, h in enumerate(history):
        if h.get("timestamp") is None or h.get("fundingRate") is None:
            raise ProviderError(f"{where}: field [{i}].{'timestamp' if h.get('timestamp') is None else 'fundingRate'} "
                                "is missing")
    df = pd.DataFrame({"ts": pd.to_datetime([h["timestamp"] for h in history], unit="ms", utc=True),
                       "rate": [float(h["fundingRate"]) for h in history]})
    df["date"] = df["ts"].dt.floor("D")
    agg = df.groupby("date", sort=True)["rate"].agg(funding_mean="mean",
                                                     funding_abs=lambda r: float(r.abs().mean()))
    return _frame(group("funding"), agg.index, {"funding_mean": agg["funding_mean"], "funding_abs": agg["funding_abs"]},
                  where)


def make_usdm(http_base: str | None = None, **config: Any) -> Any:
    """Return a ccxt ``binanceusdm`` client (the real one, or every URL rebased onto ``http_base``)."""
    import ccxt

    settings: dict[str, Any] = {"options": {"defaultType": "swap", "fetchMarkets": {"types": ["linear"]},
                                            "fetchCurrencies": False, "fetchMargins": False}, **config}
    if http_base is not None:
        from flows.exchange.binance import _rebase_tree

        base = http_base.rstrip("/")
        settings["urls"] = {"api": _rebase_tree(dict(ccxt.binanceusdm().urls["api"]), base, base)}
    return ccxt.binanceusdm(settings)


@dataclass
class HttpSource:
    """The public providers over HTTP (Fear & Greed, chain statistics) and ccxt (funding)."""

    fear_greed_url: str = "https://api.alternative.me/fng/"
    chart_url: str = "https://api.blockchain.info/charts"
    chart_api_key: str | None = None  # sent as ``api_code`` when set (blockchain.info's key parameter)
    usdm: Any = None  # a ccxt binanceusdm client (make_usdm); None: made on first use
    timeout: float = 10.0
    funding_symbol: str = FUNDING_SYMBOL
    get: Callable[[str, Mapping[str, Any], Mapping[str, str], float], Any] = get_json

    def raw(self, group_name: str, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None
            ) -> pd.DataFrame:
        """Fetch the group's daily rows in [start, end) from its provider."""
        g = group(group_name)
        headers = {"Accept": "application/json", "User-Agent": "cryptostream"}
        if g.name == "fear_greed":
            df = parse_fear_greed(self.get(self.fear_greed_url, {"limit": 0, "format": "json"}, headers,
                                           self.timeout), f"GET {self.fear_greed_url}")
        elif g.name in CHARTS:
            url = f"{self.chart_url.rstrip('/')}/{CHARTS[g.name]}"
            params: dict[str, Any] = {"timespan": "all", "format": "json", "sampled": "false"}
            if self.chart_api_key:
                params["api_code"] = self.chart_api_key
            df = parse_chart(self.get(url, params, headers, self.timeout), g.name, f"GET {url}")
        elif g.name == "funding":
            df = daily_funding(self._funding(start, end), f"fetch_funding_rate_history {self.funding_symbol}")
        else:
            raise ProviderError(f"no HTTP provider for daily group {g.name!r}")
        return _clip(df, start, end)

    def _funding(self, start: pd.Timestamp | None, end: pd.Timestamp | None) -> list[dict[str, Any]]:
        """Page through ``fetch_funding_rate_history`` (1000 a page) from ``start`` up to ``end``."""
        import ccxt

        ex = self.usdm if self.usdm is not None else make_usdm(timeout=int(self.timeout * 1000))
        since = int(pd.Timestamp(start or "2019-09-01", tz="UTC").value // 1_000_000) if start is None or \
            pd.Timestamp(start).tzinfo is None else int(pd.Timestamp(start).value // 1_000_000)
        stop = math.inf if end is None else pd.Timestamp(end).value // 1_000_000
        out: list[dict[str, Any]] = []
        while since < stop:
            try:
                page = ex.fetch_funding_rate_history(self.funding_symbol, since=since, limit=1000)
            except ccxt.BaseError as exc:
                raise ProviderError(f"fetch_funding_rate_history {self.funding_symbol}: {exc}") from None
            page = [p for p in page if p.get("timestamp") is not None and p["timestamp"] >= since]
            if not page:
                break
            out += [p for p in page if p["timestamp"] < stop]
            since = int(page[-1]["timestamp"]) + 1
        return out


def known_at(dates: pd.Series, lag: timedelta) -> pd.Series:
    """Return when each day's value becomes known: the end of its UTC day plus the publication lag."""
    return dates + DAY + pd.Timedelta(lag)


@dataclass
class DailyFeed:
    """Daily values with their point in time: what was known as of any moment.

    ``lags`` override the registry's publication lags per group (settings ``daily.lag_minutes``).
    """

    source: DailySource
    lags: Mapping[str, timedelta] = field(default_factory=dict)
    _raw: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def lag(self, group_name: str) -> timedelta:
        """Return a group's publication lag (the override, else the registry's)."""
        g = group(group_name)
        return self.lags.get(g.name, g.publication_lag)

    def has(self, group_name: str) -> bool:
        """Return whether the source holds the group (a source without ``has``: every group)."""
        has = getattr(self.source, "has", None)
        return True if has is None else bool(has(group_name))

    def history(self, group_name: str) -> pd.DataFrame:
        """Return every raw row of a group with ``known_at`` (cached; ascending)."""
        g = group(group_name)
        if g.name not in self._raw:
            df = self.source.raw(g.name)
            self._raw[g.name] = df.assign(known_at=known_at(df["date"], self.lag(g.name)))
        return self._raw[g.name]

    def known_as_of(self, group_name: str, t: pd.Timestamp | str) -> pd.DataFrame:
        """Return the group's daily raw values known at ``t`` (``known_at <= t``): ``date``, raw columns, ``known_at``."""
        h = self.history(group_name)
        return h[h["known_at"] <= pd.Timestamp(t)].reset_index(drop=True)

    def refresh(self, group_name: str | None = None) -> None:
        """Forget cached rows so the next call asks the source again (the live poller)."""
        for name in [group_name] if group_name else [g.name for g in daily_groups()]:
            self._raw.pop(group(name).name, None)
