"""Settings of the replay exchange and loading its data from them.

:class:`ReplayConfig` is the one frozen settings object of the component; the
CLI and the Python API both build it, and it validates itself.  The data mode
follows from the inputs: ``.gz`` files are recorded messages, ``.parquet`` /
``.csv`` / ``.feather`` files are candles, no data means the synthetic market.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from infra.replay_exchange.candles import CANDLE_EXTS, CandleFile, expand_candles, read_candles
from infra.replay_exchange.faults import FaultConfig
from infra.replay_exchange.recorded import load_recorded
from infra.replay_exchange.synthetic import DEFAULT_SYMBOLS, SyntheticConfig, generate, universe
from infra.replay_exchange.tape import MarketData, Timeline


@dataclass(frozen=True)
class ReplayConfig:
    """Everything a replay exchange needs.

    Attributes:
        data: Files or directories; empty means synthetic.
        synthetic: Synthetic symbols (ccxt form); used when ``data`` is empty.
        seed: Seed of candle expansion, synthetic market and faults.
        speed: Times real time of the data's own clock; 0 = as fast as the
            client reads (``max``).
        rest_horizon: ``clock``: REST trades/klines only up to what the replay
            has streamed; ``all``: the whole data set.
        start: Only data at or after this UTC time.
        end: Only data before this UTC time.
        stream_start: Where the stream begins (UTC, between ``start`` and ``end``; None
            = ``start``): the data before it is history, already "streamed" for
            the REST horizon, so klines and trades before it are served as
            Binance serves a market's past (a fresh flow's kline warm-up), and
            ``reset`` comes back here.
        trades_per_candle: Mean trades per candle when expanding candles (>= 4).
        streams: Recorded stream kinds to replay: ``trade`` plus optionally
            ``bookTicker`` and ``depth``.
        synthetic_duration_s: Seconds of synthetic market.
        synthetic_rate: Synthetic trades per second per symbol (calm regime).
        universe: Synthetic universe of this many USDT markets (plus BTC and
            USDC pairs, rates spread: :func:`~infra.replay_exchange.synthetic.universe`);
            0 = the ``synthetic`` symbols.
        clusters: Correlated clusters (sectors) of the synthetic market; None =
            one per 10 markets of a universe, none otherwise.
        batch_size: Most messages the replay loop hands a connection at once.
        wait_for_streams: Start the clock once this many distinct streams are
            subscribed (e.g. one connection per symbol); 1 = the first subscription.
        faults: Fault injection on websocket connections.
        api_key: Key the signed (order and account) endpoints accept.
        api_secret: Secret their HMAC-SHA256 signatures are checked with.
        balances: Starting free balance per asset of the one spot account
            (a mapping is accepted and stored as sorted pairs).
        maker_commission: Commission of maker fills (fraction, Binance 0.001).
        taker_commission: Commission of taker fills.
        funding: CSV of USD-M funding rates served at ``/fapi/v1/fundingRate`` (``funding.py``).
    """

    data: tuple[Path, ...] = ()
    synthetic: tuple[str, ...] = ()
    seed: int = 7
    speed: float = 0.0
    rest_horizon: Literal["all", "clock"] = "clock"
    start: datetime | None = None
    end: datetime | None = None
    stream_start: datetime | None = None
    trades_per_candle: float = 8.0
    streams: tuple[str, ...] = ("trade",)
    synthetic_duration_s: int = 6 * 3600
    synthetic_rate: float = 4.0
    universe: int = 0
    clusters: int | None = None
    batch_size: int = 512
    wait_for_streams: int = 1
    faults: FaultConfig = field(default_factory=FaultConfig)
    api_key: str = field(default="replay-key", repr=False)
    api_secret: str = field(default="replay-secret", repr=False)
    balances: tuple[tuple[str, float], ...] = (("USDT", 100_000.0),)
    maker_commission: float = 0.001
    taker_commission: float = 0.001
    funding: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(Path(p) for p in self.data))
        pairs = self.balances.items() if isinstance(self.balances, Mapping) else self.balances
        object.__setattr__(self, "balances", tuple(sorted((str(a).upper(), float(v)) for a, v in pairs)))
        if any(v < 0 for _, v in self.balances):
            raise ValueError(f"balances must be >= 0, got {dict(self.balances)}")
        if not (0 <= self.maker_commission < 0.1 and 0 <= self.taker_commission < 0.1):
            raise ValueError("maker_commission and taker_commission must be fractions in [0, 0.1)")
        if not self.api_key or not self.api_secret:
            raise ValueError("api_key and api_secret must not be empty")
        if self.speed < 0:
            raise ValueError("speed must be >= 0 (0 = as fast as the client reads)")
        if self.rest_horizon not in ("all", "clock"):
            raise ValueError("rest_horizon must be 'all' or 'clock'")
        for name in ("start", "end", "stream_start"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware (UTC), got {value!r}")
        if self.stream_start is not None and not (
                (self.start is None or self.start <= self.stream_start)
                and (self.end is None or self.stream_start < self.end)):
            raise ValueError(f"stream_start must lie in [start, end), got {self.stream_start!r}")
        if self.trades_per_candle < 4:
            raise ValueError("trades_per_candle must be >= 4")
        if "trade" not in self.streams:
            raise ValueError("streams must include 'trade'")
        if self.batch_size < 1 or self.wait_for_streams < 1:
            raise ValueError("batch_size and wait_for_streams must be >= 1")

    @property
    def start_ms(self) -> int | None:
        """Return ``start`` in ms since the epoch."""
        return None if self.start is None else int(self.start.timestamp() * 1000)

    @property
    def stream_start_ms(self) -> int | None:
        """Return ``stream_start`` in ms since the epoch."""
        return None if self.stream_start is None else int(self.stream_start.timestamp() * 1000)

    @property
    def end_ms(self) -> int | None:
        """Return ``end`` in ms since the epoch."""
        return None if self.end is None else int(self.end.timestamp() * 1000)


def data_files(paths: tuple[Path, ...]) -> tuple[list[Path], list[Path]]:
    """Expand directories; return (recorded .gz files, candle files), each sorted.

    Raises:
        FileNotFoundError: If a path does not exist.
        ValueError: If nothing usable is found or both kinds are mixed.
    """
    files: list[Path] = []
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"replay data {p} does not exist")
        files.extend(sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p])
    gz = sorted(f for f in files if f.suffix == ".gz")
    candles = sorted(f for f in files if f.suffix in CANDLE_EXTS)
    if gz and candles:
        raise ValueError("replay data mixes recorded .gz messages and candle files; pass one kind")
    if not gz and not candles:
        raise ValueError(f"no .gz or {'/'.join(CANDLE_EXTS)} files in {', '.join(map(str, paths))}")
    return gz, candles


def load_data(config: ReplayConfig) -> MarketData:
    """Load (or generate) the market data ``config`` describes."""
    if not config.data:
        start = config.start_ms if config.start_ms is not None else SyntheticConfig.start_ms
        duration = config.synthetic_duration_s
        if config.end_ms is not None:
            duration = (config.end_ms - start) // 1000
        symbols: tuple[str, ...] = config.synthetic or DEFAULT_SYMBOLS[:3]
        scale: tuple[float, ...] = ()
        if config.universe:
            if config.synthetic:
                raise ValueError("pass either synthetic symbols or a universe size, not both")
            symbols, scale = universe(config.universe, config.seed)
        clusters = config.clusters if config.clusters is not None else config.universe // 10
        syn = SyntheticConfig(
            symbols=symbols, start_ms=start, duration_s=duration, rate=config.synthetic_rate,
            clusters=clusters, rate_scale=scale,
        )
        return generate(syn, config.seed)
    gz, candle_paths = data_files(config.data)
    if gz:
        return load_recorded(gz, config.streams, config.start_ms, config.end_ms)
    tapes = []
    for path in candle_paths:
        cf = CandleFile.from_path(path)
        df = read_candles(path, config.start_ms, config.end_ms)
        if len(df) == 0:
            raise ValueError(f"{path}: no candles between start and end")
        tapes.append(expand_candles(cf, df, config.seed, config.trades_per_candle))
    seen: dict[str, Path] = {}
    for tape, path in zip(tapes, candle_paths, strict=True):
        if tape.market.market_id in seen:
            raise ValueError(f"two candle files for {tape.market.symbol}: {seen[tape.market.market_id]} and {path}")
        seen[tape.market.market_id] = path
    desc = "candles: " + ", ".join(f"{p.name} {len(t.candles.ts) if t.candles else 0} candles -> {len(t)} trades" for p, t in zip(candle_paths, tapes, strict=True))
    return MarketData("candles", {t.market.market_id: t for t in tapes}, Timeline.merge(tapes), desc)
