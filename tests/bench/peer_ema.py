"""One peer's EMA-cross backtest over the candle files; ``bench_peers.py`` runs it in the peers' interpreter.

Usage (``bench_peers.py`` builds this command)::

    var/peers-venv/bin/python tests/bench/peer_ema.py vectorbt --repeat 3 FILE.parquet ...

The same strategy in every peer: an EMA of ``--fast`` and one of ``--slow`` bars on the close;
long only, all in when the fast EMA crosses above the slow one, all out when it crosses below; a fee
of ``--fee`` (10 bp) on each fill, filled at the close of the signal bar; 10,000 USDT per symbol,
one independent backtest per symbol.  Signals count only from bar ``--warmup`` on: the peers seed
their EMAs differently (backtrader with the mean of the first ``period`` closes, vectorbt and
nautilus_trader with the first close), and after 1,000 bars the seed's weight ((1 - 2/27)^1000,
about 1e-34) is below float rounding, so every peer sees the same crossings.

Each repeat is timed end to end: reading the parquet files into pandas, handing the candles to the
peer (its data feed, wrangler or arrays), running the backtest, reading its fills.  Prints one JSON
line: the peer's version, per repeat the wall and CPU seconds, per symbol the bars, the up and down
crossings it saw after the warm-up, its buy and sell fills and the final equity.

This file imports nothing from the project: the peers live in their own virtualenv, never in the
project's dependencies.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

CASH = 10_000.0
SAFETY = 0.999  # all-in buys spend 99.9 % of the cash, so a fill at the close plus the fee never exceeds it


def read(path: Path) -> pd.DataFrame:
    """Read one candle file into an OHLCV frame indexed by bar time (UTC, as naive datetimes).

    Naive: a timezone-aware index turns into one ``Timestamp`` object per bar wherever a peer asks
    numpy for it (vectorbt does, several times per call: 2 s of its 2.3 s per symbol).
    """
    df = pd.read_parquet(path).set_index("ts")
    df.index = df.index.tz_localize(None)
    return df


def symbol_of(path: Path) -> str:
    """``BTC_USDT-5m.parquet`` -> ``BTC/USDT``."""
    return path.name.split("-")[0].replace("_", "/")


def tally(symbol: str, bars: int, strategy: Any, equity: float) -> dict[str, Any]:
    """One symbol's line of the report from a strategy that counted its crossings and filled orders."""
    return {"symbol": symbol, "bars": bars, "ups": strategy.ups, "downs": strategy.downs, "buys": strategy.buys,
            "sells": strategy.sells, "equity": equity}


def run_backtrader(paths: list[Path], a: argparse.Namespace) -> list[dict[str, Any]]:
    """backtrader: one ``Cerebro`` per symbol, ``PandasData`` feed, ``CrossOver`` of two ``EMA``, cheat-on-close."""
    import backtrader as bt

    class EmaCross(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            fast, slow = bt.ind.EMA(self.data.close, period=a.fast), bt.ind.EMA(self.data.close, period=a.slow)
            self.cross = bt.ind.CrossOver(fast, slow)
            self.ups = self.downs = self.buys = self.sells = 0

        def next(self) -> None:
            if len(self) - 1 < a.warmup:
                return
            c = self.cross[0]
            if c > 0:
                self.ups += 1
                if not self.position:
                    self.buy(size=self.broker.getcash() * SAFETY / (self.data.close[0] * (1 + a.fee)))
            elif c < 0:
                self.downs += 1
                if self.position:
                    self.close()

        def notify_order(self, order: Any) -> None:
            if order.status == order.Completed:
                self.buys, self.sells = (self.buys + 1, self.sells) if order.isbuy() else (self.buys, self.sells + 1)

    out = []
    for path in paths:
        df = read(path)
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(bt.feeds.PandasData(dataname=df))
        cerebro.addstrategy(EmaCross)
        cerebro.broker.setcash(CASH)
        cerebro.broker.setcommission(commission=a.fee)
        cerebro.broker.set_coc(True)
        out.append(tally(symbol_of(path), len(df), cerebro.run()[0], cerebro.broker.getvalue()))
    return out


def run_vectorbt(paths: list[Path], a: argparse.Namespace) -> list[dict[str, Any]]:
    """vectorbt: ``MA.run(ewm=True)``, ``ma_crossed_above/below``, ``Portfolio.from_signals`` (all in, fees)."""
    import vectorbt as vbt

    out = []
    for path in paths:
        close = read(path)["close"]
        fast = vbt.MA.run(close, a.fast, ewm=True, short_name="fast")
        slow = vbt.MA.run(close, a.slow, ewm=True, short_name="slow")
        entries, exits = fast.ma_crossed_above(slow), fast.ma_crossed_below(slow)
        entries.iloc[:a.warmup] = False
        exits.iloc[:a.warmup] = False
        pf = vbt.Portfolio.from_signals(close, entries, exits, fees=a.fee, init_cash=CASH, freq="5min")
        side = pf.orders.values["side"]
        out.append({"symbol": symbol_of(path), "bars": len(close), "ups": int(entries.sum()),
                    "downs": int(exits.sum()), "buys": int((side == 0).sum()), "sells": int((side == 1).sum()),
                    "equity": float(pf.final_value())})
    return out


PRECISION = {"BTC/USDT": (2, 6), "ETH/USDT": (2, 4), "SOL/USDT": (2, 3), "XRP/USDT": (4, 0), "DOGE/USDT": (5, 0)}


def run_nautilus(paths: list[Path], a: argparse.Namespace) -> list[dict[str, Any]]:
    """nautilus_trader: one ``BacktestEngine`` per symbol (simulated Binance spot, cash account), ``BarDataWrangler``
    bars, a ``Strategy`` with two ``ExponentialMovingAverage`` indicators registered for the bars, market orders."""
    from decimal import Decimal

    from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
    from nautilus_trader.config import LoggingConfig, StrategyConfig
    from nautilus_trader.indicators import ExponentialMovingAverage
    from nautilus_trader.model.currencies import USDT
    from nautilus_trader.model.data import Bar, BarType
    from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
    from nautilus_trader.model.identifiers import InstrumentId, Symbol, TraderId, Venue
    from nautilus_trader.model.instruments import CurrencyPair
    from nautilus_trader.model.objects import Currency, Money, Price, Quantity
    from nautilus_trader.persistence.wranglers import BarDataWrangler
    from nautilus_trader.trading.strategy import Strategy

    venue = Venue("BINANCE")

    class EmaCrossConfig(StrategyConfig, frozen=True):  # type: ignore[call-arg,misc]
        instrument_id: InstrumentId
        bar_type: BarType

    class EmaCross(Strategy):  # type: ignore[misc]
        def __init__(self, config: EmaCrossConfig) -> None:
            super().__init__(config)
            self.fast, self.slow = ExponentialMovingAverage(a.fast), ExponentialMovingAverage(a.slow)
            self.index, self.prev = -1, math.nan
            self.ups = self.downs = self.buys = self.sells = 0

        def on_start(self) -> None:
            self.instrument = self.cache.instrument(self.config.instrument_id)
            self.register_indicator_for_bars(self.config.bar_type, self.fast)
            self.register_indicator_for_bars(self.config.bar_type, self.slow)
            self.subscribe_bars(self.config.bar_type)

        def on_bar(self, bar: Bar) -> None:
            self.index += 1
            d = self.fast.value - self.slow.value
            prev, self.prev = self.prev, d
            if self.index < a.warmup:
                return
            if d > 0 >= prev:
                self.ups += 1
                if self.portfolio.is_flat(self.config.instrument_id):
                    cash = self.portfolio.account(venue).balance_free(USDT).as_double()
                    p = self.instrument.size_precision
                    qty = math.floor(cash * SAFETY / (bar.close.as_double() * (1 + a.fee)) * 10**p) / 10**p
                    self.submit_order(self.order_factory.market(self.config.instrument_id, OrderSide.BUY,
                                                                Quantity(qty, p)))
            elif d < 0 <= prev:
                self.downs += 1
                if self.portfolio.is_net_long(self.config.instrument_id):
                    self.close_all_positions(self.config.instrument_id)

        def on_order_filled(self, event: Any) -> None:  # an order may fill in parts: count filled orders
            if self.cache.order(event.client_order_id).is_closed:
                buy = event.order_side == OrderSide.BUY
                self.buys, self.sells = (self.buys + 1, self.sells) if buy else (self.buys, self.sells + 1)

    out = []
    for path in paths:
        symbol = symbol_of(path)
        base, quote = symbol.split("/")
        pp, sp = PRECISION[symbol]
        iid = InstrumentId(Symbol(base + quote), venue)
        inst = CurrencyPair(instrument_id=iid, raw_symbol=Symbol(base + quote), base_currency=Currency.from_str(base),
                            quote_currency=USDT, price_precision=pp, size_precision=sp,
                            price_increment=Price(10.0**-pp, pp), size_increment=Quantity(10.0**-sp, sp),
                            lot_size=None, max_quantity=None, min_quantity=None, max_notional=None, min_notional=None,
                            max_price=None, min_price=None, margin_init=Decimal(0), margin_maint=Decimal(0),
                            maker_fee=Decimal(str(a.fee)), taker_fee=Decimal(str(a.fee)), ts_event=0, ts_init=0)
        engine = BacktestEngine(BacktestEngineConfig(trader_id=TraderId("BENCH-001"),
                                                     logging=LoggingConfig(log_level="ERROR")))
        engine.add_venue(venue, oms_type=OmsType.NETTING, account_type=AccountType.CASH, base_currency=None,
                         starting_balances=[Money(CASH, USDT)])
        engine.add_instrument(inst)
        bar_type = BarType.from_str(f"{iid}-5-MINUTE-LAST-EXTERNAL")
        df = read(path)[["open", "high", "low", "close", "volume"]]
        engine.add_data(BarDataWrangler(bar_type, inst).process(df))
        strategy = EmaCross(EmaCrossConfig(instrument_id=iid, bar_type=bar_type))
        engine.add_strategy(strategy)
        engine.run()
        account = engine.cache.account_for_venue(venue)
        held = account.balance_total(inst.base_currency)
        equity = account.balance_total(USDT).as_double() + (held.as_double() * df["close"].iloc[-1] if held else 0.0)
        out.append(tally(symbol, len(df), strategy, equity))
        engine.dispose()
    return out


FREQTRADE_STRATEGY = """
import pandas as pd
from freqtrade.strategy import IStrategy


class EmaCross(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "5m"
    minimal_roi = {"0": 1000.0}  # no take-profit: exits by signal only
    stoploss = -0.999
    startup_candle_count = 0
    counts: dict = {}

    def populate_indicators(self, df, metadata):
        df["fast"] = df["close"].ewm(span=FAST, adjust=False).mean()
        df["slow"] = df["close"].ewm(span=SLOW, adjust=False).mean()
        return df

    def populate_entry_trend(self, df, metadata):
        d, after = df["fast"] - df["slow"], df.index >= WARMUP
        df["enter_long"] = ((d > 0) & (d.shift() <= 0) & after).astype(int)
        df["exit_long"] = ((d < 0) & (d.shift() >= 0) & after).astype(int)
        self.counts[metadata["pair"]] = (int(df["enter_long"].sum()), int(df["exit_long"].sum()))
        return df

    def populate_exit_trend(self, df, metadata):
        return df
"""


def offline_markets(pairs: list[str], precision: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """ccxt spot market records for ``pairs``: freqtrade loads markets from the exchange, which this machine
    cannot reach; the backtest needs only their symbols, currencies and precisions."""
    out = []
    for pair in pairs:
        base, quote = pair.split("/")
        pp, sp = precision[pair]
        out.append({"id": base + quote, "symbol": pair, "base": base, "quote": quote, "baseId": base,
                    "quoteId": quote, "active": True, "type": "spot", "spot": True, "margin": False, "swap": False,
                    "future": False, "option": False, "contract": False, "linear": None, "inverse": None,
                    "contractSize": None, "precision": {"amount": 10.0**-sp, "price": 10.0**-pp},
                    "limits": {"amount": {"min": 10.0**-sp, "max": None}, "price": {"min": None, "max": None},
                               "cost": {"min": 5.0, "max": None}, "leverage": {"min": None, "max": None}},
                    "info": {}})
    return out


def run_freqtrade(paths: list[Path], a: argparse.Namespace) -> list[dict[str, Any]]:
    """freqtrade: ``Backtesting`` (its ``backtesting`` command) on the parquet files as they are (its parquet data
    handler reads ``BTC_USDT-5m.parquet`` by name), one run per pair, all in (``stake_amount`` unlimited, one open
    trade), signals from a vectorised strategy; entries fill at the next candle's open (freqtrade's rule)."""
    import tempfile

    import freqtrade.exchange.exchange as ft_exchange
    from freqtrade.configuration import Configuration
    from freqtrade.enums import RunMode
    from freqtrade.optimize.backtesting import Backtesting

    pairs = [symbol_of(p) for p in paths]

    def load_markets(self: Any, reload: bool = False) -> None:
        self._api_async.set_markets(offline_markets(pairs, PRECISION))

    ft_exchange.Exchange._load_async_markets = load_markets
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        source = FREQTRADE_STRATEGY.replace("FAST", str(a.fast)).replace("SLOW", str(a.slow))
        (Path(tmp) / "ema_cross.py").write_text(source.replace("WARMUP", str(a.warmup)))
        for path, pair in zip(paths, pairs, strict=True):
            config = {"stake_currency": "USDT", "stake_amount": "unlimited", "tradable_balance_ratio": SAFETY,
                      "max_open_trades": 1, "dry_run": True, "dry_run_wallet": CASH, "timeframe": "5m",
                      "fee": a.fee, "exchange": {"name": "binance", "pair_whitelist": [pair], "key": "", "secret": ""},
                      "pairlists": [{"method": "StaticPairList"}], "entry_pricing": {"price_side": "other"},
                      "exit_pricing": {"price_side": "other"}, "dataformat_ohlcv": "parquet", "export": "none",
                      "use_exit_signal": True}
            cfg = Path(tmp) / "config.json"
            cfg.write_text(json.dumps(config))
            config = Configuration({"config": [str(cfg)], "strategy": "EmaCross", "strategy_path": tmp,
                                    "datadir": str(path.parent), "user_data_dir": tmp, "export": "none"},
                                   RunMode.BACKTEST).get_config()
            bt = Backtesting(config)
            bt.start()
            content = bt.all_bt_content["EmaCross"]
            trades = content["results"]
            ups, downs = bt.strategylist[0].counts[pair]
            sells = int((trades["exit_reason"] == "exit_signal").sum())
            out.append({"symbol": pair, "bars": len(pd.read_parquet(path, columns=["close"])), "ups": ups,
                        "downs": downs, "buys": len(trades), "sells": sells, "equity": content["final_balance"]})
    return out


PEERS: dict[str, tuple[str, Callable[[list[Path], argparse.Namespace], list[dict[str, Any]]]]] = {
    "backtrader": ("backtrader", run_backtrader),
    "vectorbt": ("vectorbt", run_vectorbt),
    "nautilus_trader": ("nautilus_trader", run_nautilus),
    "freqtrade": ("freqtrade", run_freqtrade),
}


def main() -> int:
    """Time the peer's backtest over the files ``--repeat`` times; print one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("peer", choices=sorted(PEERS))
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--fast", type=int, default=12)
    p.add_argument("--slow", type=int, default=26)
    p.add_argument("--fee", type=float, default=0.001)
    p.add_argument("--warmup", type=int, default=1000)
    a = p.parse_args()
    module, run = PEERS[a.peer]
    t0 = time.perf_counter()
    version = __import__(module).__version__
    imported = time.perf_counter() - t0
    runs, symbols = [], []
    for _ in range(a.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        symbols = run(a.files, a)
        runs.append({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0})
    print(json.dumps({"peer": a.peer, "version": version, "python": sys.version.split()[0], "import": imported,
                      "runs": runs, "symbols": symbols}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
