"""Build the configured strategy: a built-in by name or a user's class by ``package.module:Class``.

``strategy.name`` (env ``CRYPTOSTREAM_STRATEGY__NAME``) selects it: ``legacy``,
``cost_aware`` or ``trend`` (:data:`BUILTINS`), or the dotted path of a
:class:`~flows.strategies.base.Strategy` subclass importable from the run's Python
path, e.g. ``mystrats.momentum:Momentum``.  ``strategy.params`` (env
``CRYPTOSTREAM_STRATEGY__PARAMS__<NAME>``) is validated against the class's ``Params``
model.  An unknown name, a class that is not a strategy or a bad parameter stops
the run at start with a :class:`~flows.errors.SettingsError` naming the field
(``strategy.name`` or ``strategy.params.<name>``) and its environment variable.
The cost-aware strategy was registered as ``default`` until 2026-12; that name
(:data:`RENAMED`) now stops the run naming the new one, rather than silently meaning
something else.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from flows.errors import SettingsError
from flows.execution.costs import round_trip_cost
from flows.strategies.base import Strategy, StrategyEnv, StrategyParams
from flows.strategies.cost_aware import CostAware
from flows.strategies.legacy import Legacy
from flows.strategies.trend import Trend

#: the built-in strategies by ``strategy.name``
BUILTINS: dict[str, type[Strategy]] = {c.name: c for c in (Legacy, CostAware, Trend)}
_ENV = "CRYPTOSTREAM_STRATEGY__"
#: former built-in names -> their current names (refused with a message naming the new one)
RENAMED: dict[str, str] = {"default": "cost_aware"}


def strategy_class(name: str) -> type[Strategy]:
    """Return the built-in strategy ``name`` or the class at ``package.module:Class``."""
    field = f"strategy.name (env {_ENV}NAME) = {name!r}"
    if name in BUILTINS:
        return BUILTINS[name]
    if name in RENAMED:
        raise SettingsError(f"{field}: the built-in strategy {name!r} was renamed {RENAMED[name]!r}; set "
                            f"strategy.name: {RENAMED[name]} (env {_ENV}NAME={RENAMED[name]})")
    module, sep, attr = name.partition(":")
    if not sep or not module or not attr:
        raise SettingsError(f"{field}: not a built-in strategy ({', '.join(sorted(BUILTINS))}) nor a class path "
                            "package.module:Class")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise SettingsError(f"{field}: cannot import module {module!r}: {exc}") from None
    except AttributeError:
        raise SettingsError(f"{field}: module {module!r} has no {attr!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise SettingsError(f"{field}: {attr} is not a subclass of flows.strategies.base.Strategy")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, StrategyParams)):
        raise SettingsError(f"{field}: {attr}.Params must subclass flows.strategies.base.StrategyParams")
    return cls


def strategy_params(cls: type[Strategy], params: Mapping[str, Any]) -> StrategyParams:
    """Return ``params`` validated by ``cls.Params``; a bad one raises naming ``strategy.params.<name>``."""
    try:
        return cls.Params.model_validate(dict(params))
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            loc = [str(p) for p in e["loc"]]
            where = ".".join(["strategy", "params", *loc])
            env = _ENV + "__".join(["PARAMS", *loc]).upper()
            msg = "is not a parameter of this strategy" if e["type"] == "extra_forbidden" else e["msg"]
            shown = f" = {e['input']!r}" if loc else ""
            lines.append(f"  {where} (env {env}){shown}: {msg.removeprefix('Value error, ')}")
        raise SettingsError(f"invalid strategy parameters of {cls.__name__}:\n" + "\n".join(lines)) from None


def strategy_env(settings: Any) -> StrategyEnv:
    """Return the run's :class:`StrategyEnv` from the settings (timeframe, costs, signal rules)."""
    from flows.timeframes import timeframe_ms

    tf = timeframe_ms(settings.trading_timeframe())
    ex = settings.execution
    return StrategyEnv(tf, 365 * 86_400_000 / tf, round_trip_cost(ex.taker_fee, ex.slippage.base_bps),
                       settings.risk.signals, settings.scoring.confidence_threshold)


def build_strategy(settings: Any) -> Strategy:
    """Return the strategy of ``settings.strategy`` (name and params), ready for its first bar."""
    cfg = settings.strategy
    cls = strategy_class(cfg.name)
    return cls(strategy_params(cls, cfg.params), strategy_env(settings))


def check_strategy(settings: Any) -> None:
    """Raise :class:`SettingsError` unless the configured strategy and its parameters are valid."""
    cls = strategy_class(settings.strategy.name)
    strategy_params(cls, settings.strategy.params)
