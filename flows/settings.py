"""Typed, frozen settings for every component, read once at the edge.

Sources, in increasing priority: defaults, an optional YAML file
(``CRYPTOSTREAM_CONFIG`` or ``--config``), environment variables.  Environment
variables use the prefix ``CRYPTOSTREAM_`` and ``__`` for nesting
(``CRYPTOSTREAM_REPLAY__SPEED=60``); the connection settings printed by
``infra/up`` (``TIMESCALE_DSN``, ``REDIS_URL``) are read under their own names.
List values in the environment are comma separated.

An invalid value raises :class:`SettingsError`, whose message names every bad
field, the environment variable that sets it and the accepted values.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from flows.errors import (
    SettingsError as SettingsError,  # re-exported: callers catch flows.settings.SettingsError
)
from flows.exchange.universe import UniverseConfig
from flows.execution.config import ExecutionConfig
from flows.monitoring.alerts import AlertSettings
from flows.monitoring.config import DriftConfig, MonitoringConfig
from flows.monitoring.dashboard.config import DashboardConfig
from flows.monitoring.logging import LogSettings
from flows.operators.bars import MAX_EMPTY_BARS
from flows.operators.features import WARMUP
from flows.operators.regime import RegimeConfig
from flows.operators.trade_time import TradeTimeConfig
from flows.risk.config import RiskConfig
from flows.sources.daily_config import DailyConfig
from flows.sources.rest_fill import FillRetry
from flows.stores.config import BackupConfig, StoreConfig
from flows.timeframes import TIMEFRAME_RE

ENV_PREFIX = "CRYPTOSTREAM_"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,15}/[A-Z0-9]{2,10}$")
PROFILE_SERVERS: dict[str, tuple[str, ...]] = {"local": (), "timescale": ("TIMESCALE_DSN", "REDIS_URL")}  # what each needs
_LIST_FIELDS = {"symbols", "timeframes"}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # every float finite


class ExchangeSettings(_Frozen):
    """How to reach the exchange (ccxt).  URLs unset means the real exchange."""

    id: Literal["binance"] = "binance"
    http_url: str | None = Field(None, description="REST base URL override, e.g. the replay exchange")
    ws_url: str | None = Field(None, description="websocket base URL override")
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    fill_gaps: bool = Field(True, description="after a disconnect or restart, fetch missed trades from REST")
    fill_since: datetime | None = Field(None, description="on a fresh start, first fetch trades since this UTC time")
    idle_stop_s: float = Field(0.0, ge=0.0, description="end the stream after this many quiet seconds; 0 = never")
    fill_retry: FillRetry = Field(FillRetry(), description="retries of a gap fill's REST call after a network "
                                  "error, a timeout, HTTP 5xx or 429 (flows/sources/rest_fill.py)")
    warmup_klines: int = Field(WARMUP - 1, ge=0, le=1000, description=(
        "on a fresh start (no snapshot), klines fetched per symbol and timeframe from the public REST endpoint "
        f"to warm the features up; {WARMUP - 1}: the first live bar is the features' {WARMUP}th, the first with "
        "converged features, as in a backtest of the same bars; 0 = off (features then "
        f"appear after {WARMUP} live bars)"))

    @field_validator("fill_since")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must be a UTC time with its offset, e.g. 2024-08-08T23:54:00Z")
        return value

    @field_validator("api_key", "api_secret")
    @classmethod
    def _not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty (unset it instead, or set the key)")
        return value

    @field_validator("http_url", "ws_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(https?|wss?)://[^\s/]+", value):
            raise ValueError("must be a URL such as http://127.0.0.1:9000 or ws://127.0.0.1:9000")
        return value


class ReplaySettings(_Frozen):
    """The local replay exchange the default run streams from."""

    data: Path | None = Field(None, description="recorded .gz messages or candle files; unset = synthetic")
    synthetic_symbols: int = Field(3, ge=1, le=1000)
    speed: float = Field(60.0, ge=0.0, description="times real time; 0 = as fast as the client reads")
    port: int = Field(0, ge=0, le=65535, description="0 = any free port")
    seed: int = 7


class BarSettings(_Frozen):
    """Event-time bar building."""

    timeframes: tuple[str, ...] = ("1m",)
    allowed_lateness_ms: int = Field(0, ge=0, le=3_600_000)
    fill_empty: bool = True
    max_empty_bars: int = Field(MAX_EMPTY_BARS, ge=0, le=100_000, description="empty bars one trade may close "
                                "at most; a longer gap stays open (a dead letter says so)")

    @field_validator("timeframes", mode="before")
    @classmethod
    def _timeframes(cls, value: Any) -> Any:
        values = _split(value)
        if not values:
            raise ValueError("needs at least one timeframe, e.g. 1m")
        for tf in values:
            if not isinstance(tf, str) or not TIMEFRAME_RE.match(tf):
                raise ValueError(f"{tf!r} is not a timeframe; accepted: <n><s|m|h|d>, e.g. 1m, 5m, 1h")
        return tuple(values)


def _optional_timeframe(value: str | None) -> str | None:
    """Return ``value`` if it is a timeframe or ``None``; else a message with the accepted form."""
    if value is not None and not TIMEFRAME_RE.match(value):
        raise ValueError(f"{value!r} is not a timeframe; accepted: <n><s|m|h|d>, e.g. 1m, 5m, 1h")
    return value


class ScoringSettings(_Frozen):
    """Which registered models score each bar, and how a new version is picked up."""

    registry: Path | None = Field(None, description="registry root; unset = <data_dir>/registry")
    timeframe: str | None = Field(None, description="timeframe scored and traded; unset = the first of bars.timeframes")
    ensemble_version: str = Field("latest", description="registered ensemble version (its members come with it)")
    policy_family: str | None = Field("rl_tactical", description="RL policy family; empty = no policy")
    policy_version: str = "latest"
    confidence_threshold: float = Field(0.1, ge=0.0, le=1.0, description="minimum ensemble confidence to act")
    swap_key: str = Field("cryptostream:models:swap", description="Redis key (timescale profile) or file name "
                          "under data_dir (local) whose change makes the flow reload the registry's versions")
    strategy: str = Field("cs", pattern=r"^[A-Za-z0-9_-]{1,16}$", description="strategy name in client order ids")
    gnn_cluster_size: int = Field(20, ge=0, description="above this many assets the GNN scores correlated clusters "
                                  "of at most this many (one batched run per close); 0 = dense over all assets")

    @field_validator("policy_family", mode="before")
    @classmethod
    def _empty_none(cls, value: Any) -> Any:
        return None if value in ("", "none") else value

    @field_validator("timeframe")
    @classmethod
    def _tf(cls, value: str | None) -> str | None:
        return _optional_timeframe(value)


class StrategySettings(_Frozen):
    """Which strategy decides the trades (:mod:`flows.strategies`), and its parameters."""

    name: str = Field("legacy", pattern=r"^[A-Za-z_][A-Za-z0-9_.]*(:[A-Za-z_][A-Za-z0-9_]*)?$",
                      description="built-in (legacy, cost_aware, trend) or a user's class as package.module:Class")
    params: dict[str, Any] = Field(default_factory=dict, description="the strategy's parameters, validated by "
                                   "its Params model at start")


class RetrainSettings(_Frozen):
    """Scheduled retraining: windows, what each job trains, and what a challenger must show (training/retrain.py)."""

    timeframe: str | None = Field(None, description="timeframe retrained; unset = the trading timeframe")
    daily_days: float = Field(30.0, gt=0.0, description="daily job: training window (days before the "
                              "comparison window)")
    weekly_days: float = Field(365.0, gt=0.0, description="weekly job: training window (days)")
    compare_days: float = Field(7.0, gt=0.0, description="the most recent days, left out of training: the "
                                "challenger and the champion are backtested on them")
    members: tuple[str, ...] = Field(("lightgbm", "lstm", "gnn"), description="ensemble members retrained")
    policies: bool = Field(True, description="the weekly job retrains the tactical policy (scoring.policy_family)")
    metric: Literal["sharpe", "sortino", "calmar", "total_return"] = Field(
        "sharpe", description="the gate's figure the challenger must beat the champion on")
    margin: float = Field(0.0, description="the challenger's metric must be >= the champion's + margin")
    max_drawdown_margin: float = Field(0.0, ge=0.0, description="and its max drawdown <= the champion's + this")
    gate: dict[str, float] = Field(default_factory=dict, description="thresholds of training.gate's GateConfig "
                                   "(e.g. min_sharpe); the paper record is judged at go-live, not here")
    quick: bool = Field(False, description="tiny models (the bootstrap's): for demos and tests")
    seed: int = 7
    daily_cron: str = Field("30 2 * * *", description="python -m training.schedule: when the daily job runs (UTC)")
    weekly_cron: str = Field("30 3 * * sun", description="when the weekly job runs (UTC; it replaces that "
                             "day's daily run)")
    misfire_grace_s: float = Field(7 * 24 * 3600.0, gt=0.0, description="a run missed by less than this is "
                                   "caught up once at start")

    @field_validator("members", mode="before")
    @classmethod
    def _members(cls, value: Any) -> Any:
        values = _split(value)
        unknown = [m for m in values if m not in ("lightgbm", "lstm", "gnn")]
        if not values or unknown:
            raise ValueError(f"members must be some of lightgbm, lstm, gnn (comma-separated), not {value!r}")
        return tuple(values)

    @field_validator("timeframe")
    @classmethod
    def _tf(cls, value: str | None) -> str | None:
        return _optional_timeframe(value)


class Settings(_Frozen):
    """Settings of one run of the system."""

    profile: Literal["local", "timescale"] = "local"
    mode: Literal["paper", "live"] = "paper"
    symbols: tuple[str, ...] = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    universe: UniverseConfig = Field(UniverseConfig(), description="symbols, or a pairlist from the exchange's "
                                     "markets by quote and volume (flows/exchange/universe.py)")
    data_dir: Path = Field(PROJECT_ROOT / "var", description="local artefacts: Feast files, registry, logs")
    feast_repo: Path = Field(PROJECT_ROOT / "feature_repo", description="Feast repository (definitions + profiles)")
    timescale_dsn: SecretStr | None = None
    redis_url: SecretStr | None = None
    feast_online: Literal["postgres", "redis"] = Field(
        "postgres", description="online store of the timescale profile (local always uses SQLite)")
    duration_s: float = Field(0.0, ge=0.0, description="stop the run after this many seconds; 0 = no bound")
    exchange: ExchangeSettings = ExchangeSettings()
    replay: ReplaySettings = ReplaySettings()
    bars: BarSettings = BarSettings()
    trade_time: TradeTimeConfig = Field(TradeTimeConfig(), description="plausible trade times "
                                        "(flows/operators/trade_time.py)")
    scoring: ScoringSettings = ScoringSettings()
    risk: RiskConfig = Field(RiskConfig(), description="sizing, limits, breakers, kill switch (flows/risk/config.py)")
    execution: ExecutionConfig = Field(ExecutionConfig(), description="broker, fees, slippage, live guard "
                                       "(flows/execution/config.py)")
    initial_cash: float = Field(10_000.0, gt=0.0, description="paper portfolio starting cash (quote currency)")
    strategy: StrategySettings = Field(StrategySettings(), description="decision logic (flows/strategies)")
    regime: RegimeConfig = Field(RegimeConfig(), description="the market regime the strategies see "
                                 "(flows/operators/regime.py)")
    monitoring: MonitoringConfig = Field(MonitoringConfig(), description="Prometheus /metrics port "
                                         "(flows/monitoring/config.py); not part of the run id")
    alerts: AlertSettings = Field(AlertSettings(), description="webhook / Telegram alerts "
                                  "(flows/monitoring/alerts.py)")
    stores: StoreConfig = Field(StoreConfig(), description="riding out a TimescaleDB or Redis outage "
                                "(flows/stores/config.py)")
    drift: DriftConfig = Field(DriftConfig(), description="feature and calibration drift checks "
                               "(flows/monitoring/config.py, python -m training.drift); not part of the run id")
    backup: BackupConfig = Field(BackupConfig(), description="python -m infra.db backup: directory and how "
                                 "many are kept (flows/stores/config.py); not part of the run id")
    log: LogSettings = Field(LogSettings(), description="console and file logging (flows/monitoring/logging.py)")
    dashboard: DashboardConfig = Field(DashboardConfig(), description="the Streamlit dashboard "
                                       "(flows/monitoring/dashboard); not part of the run id")
    retrain: RetrainSettings = Field(RetrainSettings(), description="scheduled retraining (training/retrain.py, "
                                     "training/schedule.py); not part of the run id")
    daily: DailyConfig = Field(DailyConfig(), description="daily providers of the on-chain, funding and "
                               "sentiment feature groups (flows/sources/daily_config.py)")

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, value: Any) -> Any:
        values = _split(value)
        if not values:
            raise ValueError("needs at least one symbol, e.g. BTC/USDT")
        for sym in values:
            if not isinstance(sym, str) or not SYMBOL_RE.match(sym):
                raise ValueError(f"{sym!r} is not a ccxt symbol; accepted: BASE/QUOTE in capitals, e.g. BTC/USDT")
        if len(set(values)) != len(values):
            raise ValueError("symbols repeat")
        return tuple(values)

    @model_validator(mode="after")
    def _timeframes_served(self) -> Settings:
        """Bars only of timeframes with Feast views; score a timeframe that bars are built for."""
        from flows.feature_catalog import FEATURE_TIMEFRAMES

        unserved = [tf for tf in self.bars.timeframes if tf not in FEATURE_TIMEFRAMES]
        if unserved:
            raise ValueError(f"bars.timeframes: {', '.join(unserved)} has no feature views; accepted: "
                             f"{', '.join(FEATURE_TIMEFRAMES)} (flows/feature_catalog.py FEATURE_TIMEFRAMES)")
        tf = self.scoring.timeframe
        if tf is not None and tf not in self.bars.timeframes:
            raise ValueError(f"scoring.timeframe: {tf} is not built (bars.timeframes is "
                             f"{', '.join(self.bars.timeframes)}); add it there or score one of those")
        return self

    def run_id(self) -> str:
        """Return a short hash of the effective configuration, secrets excluded."""
        doc = self.model_dump(mode="json", exclude={"timescale_dsn", "redis_url", "exchange", "alerts", "stores",
                                                    "log", "monitoring", "backup", "drift",
                                                    "dashboard", "retrain"})
        doc["exchange"] = self.exchange.model_dump(mode="json", exclude={"api_key", "api_secret"})
        blob = json.dumps(doc, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def require_servers(self) -> None:
        """Fail unless the connection settings the profile needs (:data:`PROFILE_SERVERS`) are present."""
        values = {"TIMESCALE_DSN": self.timescale_dsn, "REDIS_URL": self.redis_url}
        missing = [n for n in PROFILE_SERVERS[self.profile] if values[n] is None]
        if missing:
            raise SettingsError(
                f"profile {self.profile!r} needs {', '.join(missing)}; run `set -a; eval \"$(infra/up)\"; set +a` "
                "or set them to your servers"
            )


    def registry_root(self) -> Path:
        """Return the model registry root (``scoring.registry`` or ``<data_dir>/registry``)."""
        return self.scoring.registry or self.data_dir / "registry"

    def trading_timeframe(self) -> str:
        """Return the timeframe that is scored and traded."""
        return self.scoring.timeframe or self.bars.timeframes[0]

    def require_live_guard(self) -> None:
        """Fail unless live trading is fully asked for: see :func:`check_live_guard`."""
        check_live_guard(self)


def check_live_guard(settings: Settings, execution: ExecutionConfig | None = None) -> None:
    """Stop at start unless live trading was asked for on every required field.

    Live orders need ``mode=live`` *and* ``execution.broker=live`` *and*
    ``execution.live.confirm=true``, an API key and secret (environment or
    ``execution.live.secrets_file``) and ``execution.live.max_capital``.  A live
    broker without ``mode=live`` is refused too.  The message names the field;
    key values are never shown.

    Args:
        settings: the run's settings.
        execution: the execution config (``settings.execution`` by default).
    """
    ex = execution or settings.execution
    broker = ex.broker
    if settings.mode != "live":
        if broker == "live":
            raise SettingsError("execution.broker (env CRYPTOSTREAM_EXECUTION__BROKER) = 'live' needs mode=live "
                                "(CRYPTOSTREAM_MODE=live or --mode live); paper is the default")
        return
    live = ex.live
    problems = []
    if broker != "live":
        problems.append("execution.broker (env CRYPTOSTREAM_EXECUTION__BROKER) must be 'live' in mode=live")
    if not live.confirm:
        problems.append("execution.live.confirm (env CRYPTOSTREAM_EXECUTION__LIVE__CONFIRM) must be true to "
                        "trade real money")
    if live.max_capital is None or not 0.0 < live.max_capital < math.inf:  # also NaN
        problems.append("execution.live.max_capital (env CRYPTOSTREAM_EXECUTION__LIVE__MAX_CAPITAL) must cap the "
                        "capital in quote currency (a finite amount above 0)")
    secrets_file = live.secrets_file
    has_keys = settings.exchange.api_key is not None and settings.exchange.api_secret is not None
    if not has_keys and secrets_file is None:
        problems.append("exchange.api_key and exchange.api_secret (env CRYPTOSTREAM_EXCHANGE__API_KEY, "
                        "CRYPTOSTREAM_EXCHANGE__API_SECRET) or execution.live.secrets_file are required")
    elif not has_keys and not Path(str(secrets_file)).is_file():
        problems.append(f"execution.live.secrets_file: {secrets_file} does not exist")
    if problems:
        raise SettingsError("mode=live refused:\n  " + "\n  ".join(problems))


def _split(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(f"{value!r} is not a list; write a YAML list or a comma-separated string, e.g. "
                     "BTC/USDT,ETH/USDT or 1m,5m")


def _env_tree(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        path = key[len(ENV_PREFIX):].lower().split("__")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SettingsError(f"environment variable {key} conflicts with another setting")
        node[path[-1]] = value
    for name, field in (("TIMESCALE_DSN", "timescale_dsn"), ("REDIS_URL", "redis_url")):
        if env.get(name):
            tree.setdefault(field, env[name])
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _env_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ENV_PREFIX + "__".join(parts).upper()


# Names whose values are never shown, known setting or not (URLs may carry a password).
_SECRET_NAME = re.compile(r"key|secret|passw|passphrase|token|dsn|url|credential|auth|private|cookie|signature",
                          re.IGNORECASE)


def _secret_field(loc: tuple[Any, ...]) -> bool:
    """Return True if ``loc`` names a secret: a ``SecretStr`` field, or a name that looks secret."""
    model: Any = Settings
    for part in loc:
        if isinstance(part, str) and _SECRET_NAME.search(part):
            return True
        field = model.model_fields.get(part) if isinstance(part, str) and model is not None else None
        if field is None:
            model = None
            continue
        if "SecretStr" in str(field.annotation):
            return True
        model = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation,
                                                                                      BaseModel) else None
    return False


def _masked(value: Any) -> Any:
    """Return ``value`` with the values of secret-looking keys masked, at any depth."""
    if isinstance(value, Mapping):
        return {k: "<secret>" if isinstance(k, str) and _SECRET_NAME.search(k) else _masked(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    return value


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        field = ".".join(str(p) for p in loc)
        msg = e["msg"].removeprefix("Value error, ")
        if not loc:  # a check across fields: its message names them
            lines.append(f"  {msg}")
            continue
        if e["type"] == "extra_forbidden":
            msg = "is not a known setting"
        value = e.get("input")
        if _secret_field(loc):
            shown = "<secret>"
            if isinstance(value, (str, int, float)) and str(value).strip():
                msg = msg.replace(str(value), "<secret>")  # a message may quote its input
        else:
            shown = repr(_masked(value))
        lines.append(f"  {field} (env {_env_name(loc)}) = {shown}: {msg}")
    return "invalid settings:\n" + "\n".join(lines)


def load_settings(
    config: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings from defaults, a YAML file, the environment and overrides.

    Args:
        config: YAML file; defaults to ``$CRYPTOSTREAM_CONFIG`` when set.
        env: environment mapping (``os.environ`` by default).
        **overrides: values that win over every other source (CLI flags).

    Raises:
        SettingsError: naming every invalid field and what it accepts.
    """
    env = os.environ if env is None else env
    config = config or env.get(ENV_PREFIX + "CONFIG")
    doc: dict[str, Any] = {}
    if config:
        path = Path(config)
        if not path.is_file():
            raise SettingsError(f"config file {path} does not exist (set by --config or {ENV_PREFIX}CONFIG)")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SettingsError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise SettingsError(f"config file {path} must hold a mapping of settings")
        doc = loaded
    doc = _merge(_merge(doc, _env_tree(env)), {k: v for k, v in overrides.items() if v is not None})
    try:
        settings = Settings.model_validate(doc)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    # the strategy is checked once the settings are: it may import the user's module
    from flows.strategies.load import check_strategy

    check_strategy(settings)
    return settings
