"""Point-in-time training sets from Feast, with forward-return labels.

    python -m training.datasets --symbols BTC/USDT ETH/USDT --timeframe 1h \\
        --start 2023-01-01 --end 2024-01-01 --service lightgbm_1h_v1 --horizon 4 --out train.parquet

Decision times are bar closes in ``[start, end)``.  Features come from
``FeatureStore.get_historical_features`` with an entity frame of
(symbol, decision time), so each row holds the values known at that time and
never later.  Labels use only prices after the decision time: the forward log
return from the next bar's open to the close ``horizon`` bars later,

    fwd_ret = ln(close[t + horizon * tf] / open[t]),  label = 1 if fwd_ret > 0 else 0,

where ``open[t]`` is the open of the bar that starts at the decision time t.
Rows whose label window runs past the stored bars are dropped, not guessed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flows import feast_store
from flows.feast_store import open_store
from flows.settings import Settings, SettingsError, load_settings
from flows.stores import open_stores
from flows.timeframes import timeframe_ms


def load_bars(settings: Settings, symbols: tuple[str, ...], timeframe: str,
              start: pd.Timestamp, end: pd.Timestamp,
              columns: Sequence[str] = ("symbol", "ts", "open", "close")) -> pd.DataFrame:
    """Read stored bars (open time ``ts``) of the symbols between start and end from the offline store.

    ``columns`` are columns of ``bars`` (``flows.stores.schema.BAR_COLUMNS`` for all of them).
    """
    df = open_stores(settings).history_reader().bars(symbols, timeframe, start, end, columns)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return df.reset_index(drop=True)


def attach_labels(bars: pd.DataFrame, timeframe: str, horizon: int) -> pd.DataFrame:
    """Return (symbol, event_timestamp, fwd_ret, label) for every decision time with a full label window."""
    tf = pd.Timedelta(milliseconds=timeframe_ms(timeframe))
    out = []
    for symbol, g in bars.groupby("symbol", sort=True):
        g = g.set_index("ts").sort_index()
        decision = g.index  # a decision at t uses the bar that opens at t and those after it
        entry = g["open"]
        exit_close = g["close"].reindex(decision + (horizon - 1) * tf).to_numpy()
        fwd = np.log(exit_close / entry.to_numpy())
        frame = pd.DataFrame({"symbol": symbol, "event_timestamp": decision, "fwd_ret": fwd})
        out.append(frame[np.isfinite(fwd)])
    labels = pd.concat(out, ignore_index=True) if out else pd.DataFrame(
        columns=["symbol", "event_timestamp", "fwd_ret"])
    labels["label"] = (labels["fwd_ret"] > 0).astype(np.int64)  # int64: every offline store takes it (int8 became "tinyint")
    return labels


def _stale_views(settings: Settings, store: Any, service: Any) -> list[str]:
    """Return the service's views whose registered batch source is not where this profile keeps the history."""
    stores, stale = open_stores(settings), []
    for proj in service.feature_view_projections:
        view = store.get_feature_view(proj.name)
        table, tf = view.tags.get("table"), view.tags.get("timeframe")
        if not table or not tf:
            continue
        want, have = _where(stores.feast_source(table, tf)), _where(view.batch_source)
        if want != have:
            stale.append(f"{proj.name} reads {have}, this profile writes {want}")
    return stale


def _where(source: Any) -> str:
    """Return a batch source's location: a file source's path, else its table query."""
    return str(getattr(source, "path", None) or source.get_table_query_string())


def registered_service(settings: Settings, service: str) -> tuple[Any, Any]:
    """Return the profile's FeatureStore and the feature service, registering the repository first if needed.

    ``feast apply`` runs (once, saying so on stderr) when the service is not registered yet,
    or when the registry was applied with another data directory (its views would read
    files this profile no longer writes, and the set would come back empty).
    """
    from feast.errors import FeatureServiceNotFoundException

    store = open_store(settings)
    try:
        fs = store.get_feature_service(service)
        stale = _stale_views(settings, store, fs)
        why = f"the registry was applied for other paths ({'; '.join(stale)})" if stale else ""
    except FeatureServiceNotFoundException:
        why = f"feature service {service!r} is not registered yet"
    if not why:
        return store, fs
    print(f"training.datasets: {why}: running feast apply for profile {settings.profile}", file=sys.stderr)
    feast_store.apply(settings)
    store = open_store(settings)
    try:
        fs = store.get_feature_service(service)
    except FeatureServiceNotFoundException:
        names = sorted(s.name for s in store.list_feature_services())
        raise SettingsError(f"feature service {service!r} does not exist; the repository defines {names}") from None
    return store, fs


def build_training_set(settings: Settings, symbols: tuple[str, ...], timeframe: str, start: str, end: str,
                       service: str, horizon: int = 1) -> pd.DataFrame:
    """Build the point-in-time training frame: features at each decision time plus labels after it."""
    if horizon < 1:
        raise SettingsError("horizon must be at least 1 bar")
    t0, t1 = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
    tf = pd.Timedelta(milliseconds=timeframe_ms(timeframe))
    bars = load_bars(settings, symbols, timeframe, t0, t1 + horizon * tf)
    labels = attach_labels(bars, timeframe, horizon)
    labels = labels[(labels.event_timestamp >= t0) & (labels.event_timestamp < t1)]
    store, fs = registered_service(settings, service)
    frame = store.get_historical_features(entity_df=labels, features=fs).to_df()
    # Offline stores differ in timestamp resolution (DuckDB returns microseconds): one dtype for every profile.
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    frame = frame.sort_values(["event_timestamp", "symbol"]).reset_index(drop=True)
    return frame.dropna().reset_index(drop=True)  # rows before warm-up have no features: dropped


def main(argv: list[str] | None = None) -> int:
    """Command line: write a training set to parquet."""
    p = argparse.ArgumentParser(prog="python -m training.datasets", description=__doc__.split("\n\n")[0])
    p.add_argument("--config")
    p.add_argument("--symbols", nargs="+", required=True)
    p.add_argument("--timeframe", default="1h")
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.add_argument("--service", required=True, help="Feast feature service, e.g. lightgbm_1h_v1")
    p.add_argument("--horizon", type=int, default=1, help="label horizon in bars")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    try:
        settings = load_settings(a.config)
        frame = build_training_set(settings, tuple(a.symbols), a.timeframe, a.start, a.end, a.service, a.horizon)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    frame.to_parquet(a.out)
    print(f"{len(frame)} rows x {frame.shape[1]} columns -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
