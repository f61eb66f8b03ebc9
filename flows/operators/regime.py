"""Market regime, point in time: bull / bear / sideways crossed with high / low volatility.

A pure state machine fed one reference price per bar close (and, when present, the
daily funding and sentiment values known at that close).  It samples the price once
an hour (closes whose time is a multiple of :attr:`RegimeModel.sample_ms`) and
computes, from the samples up to that close only:

- ``trend``: ``log(P_t / P_{t - trend_days})``, the log return over ``trend_days``;
- ``vol``: ``log`` of the annualised standard deviation of the hourly log returns of
  the last ``vol_days``;
- ``funding``: the BTC perpetual's daily mean funding rate in basis points;
- ``sentiment``: Fear & Greed / 100 - 0.5 (``[-0.5, 0.5]``).

Two classifiers read these inputs:

- :class:`HmmRegime`, a Gaussian hidden Markov model with diagonal covariances fitted
  offline (``python -m training.regime fit``) on standardised inputs.  Its state probabilities are *filtered*
  (the forward recursion: ``p_t ∝ (p_{t-1} A) * N(x_t)``), never smoothed, so the
  label at ``t`` uses nothing after ``t``.  Each hidden state is mapped to one named
  regime when the model is fitted (its mean trend against ``± trend_band``, its mean
  log vol against ``vol_split``); a regime's probability is the sum of its states'.
  An input that is missing at a step (no daily data, or before it starts) is left out
  of that step's likelihood (marginalised: with diagonal covariances that is exact), so
  the same model runs from prices alone.
- :class:`RuleRegime`, documented rules needing no fit: bull when ``trend > trend_band``,
  bear when ``trend < -trend_band``, else sideways; high vol when the annualised vol is
  above ``high_vol``.  Prices only.

Each step returns a :class:`RegimeState`: the label (``"bull/high vol"`` ...: the likelier
direction, then the likelier volatility, each from its marginal; :func:`regime_label`), the
score ``P(bull) - P(bear)`` in ``[-1, 1]`` that the signal combiner and the strategies
read as ``regime``, and the named regimes' probabilities.  Before the trend window has
filled (``trend_days`` of samples) there is no regime (None).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from flows.sources.daily import DailyFeed

REGIMES: tuple[str, ...] = ("bull/high vol", "bull/low vol", "sideways/high vol", "sideways/low vol",
                            "bear/high vol", "bear/low vol")
INPUTS: tuple[str, ...] = ("trend", "vol", "funding", "sentiment")
DAILY_INPUTS: tuple[str, ...] = ("funding", "sentiment")
# The regime feature group (flows/feature_groups.py): label code (index in REGIMES), score, probabilities
REGIME_FEATURES: tuple[str, ...] = ("regime_code", "regime_score",
                                    *(f"regime_p_{r.replace('/', '_').replace(' ', '_')}" for r in REGIMES))
REGIME_TABLE = "regime_features"
REGIME_TIMEFRAME = "1h"  # the ``timeframe`` of the stored rows: the default sampling step
MODEL_FILE = "regime.json"
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
_HOURS_PER_YEAR = 24 * 365


class RegimeState(NamedTuple):
    """The regime known at one bar close."""

    ts: int  # bar close, ms
    label: str  # one of REGIMES
    score: float  # P(bull) - P(bear), in [-1, 1]
    probs: tuple[float, ...]  # per REGIMES


@dataclass(frozen=True)
class RuleRegime:
    """Documented rules on trend and volatility (no fit; prices only)."""

    trend_days: float = 30.0
    vol_days: float = 7.0
    trend_band: float = 0.05  # |30-day log return| below it: sideways
    high_vol: float = 0.6  # annualised volatility above it: high vol
    sample_ms: int = HOUR_MS
    kind: str = "rules"

    def step(self, probs: np.ndarray | None, x: np.ndarray) -> np.ndarray:
        """Return the named regimes' probabilities (one-hot) for inputs ``x`` (INPUTS order)."""
        trend, vol = x[0], x[1]
        d = "bull" if trend > self.trend_band else "bear" if trend < -self.trend_band else "sideways"
        v = "high vol" if vol > math.log(self.high_vol) else "low vol"
        out = np.zeros(len(REGIMES))
        out[REGIMES.index(f"{d}/{v}")] = 1.0
        return out

    def regime_probs(self, state_probs: np.ndarray) -> np.ndarray:
        """Return the named regimes' probabilities (the rules' state is already one)."""
        return state_probs


@dataclass(frozen=True)
class HmmRegime:
    """A fitted Gaussian HMM (diagonal covariances) read with the forward filter only."""

    inputs: tuple[str, ...]  # the observed inputs, a subset of INPUTS in that order
    startprob: tuple[float, ...]  # [K]
    transmat: tuple[tuple[float, ...], ...]  # [K, K]
    means: tuple[tuple[float, ...], ...]  # [K, D]
    variances: tuple[tuple[float, ...], ...]  # [K, D]
    state_regimes: tuple[str, ...]  # [K] the named regime of each state
    trend_days: float = 30.0
    vol_days: float = 7.0
    sample_ms: int = HOUR_MS
    trend_band: float = 0.0
    vol_split: float = 0.0
    center: tuple[float, ...] = ()  # [D] subtracted from the inputs before the likelihood (empty: 0)
    scale: tuple[float, ...] = ()  # [D] the inputs are divided by it (empty: 1)
    fit: Mapping[str, Any] = field(default_factory=dict)  # provenance: data, range, seed, log-likelihood
    kind: str = "hmm"

    def __post_init__(self) -> None:
        k, d = len(self.startprob), len(self.inputs)
        bad = [n for n in self.inputs if n not in INPUTS]
        if bad or len(set(self.inputs)) != d or self.inputs[:2] != ("trend", "vol"):
            raise ValueError(f"HmmRegime.inputs must start with trend, vol and name inputs of {INPUTS}, "
                             f"got {self.inputs}")
        a = np.asarray(self.transmat)
        if a.shape != (k, k) or np.asarray(self.means).shape != (k, d) or np.asarray(self.variances).shape != (k, d):
            raise ValueError(f"HmmRegime: transmat/means/variances must be [{k},{k}], [{k},{d}], [{k},{d}]")
        if (np.asarray(self.variances) <= 0).any():
            raise ValueError("HmmRegime.variances must be positive")
        unknown = [r for r in self.state_regimes if r not in REGIMES]
        if len(self.state_regimes) != k or unknown:
            raise ValueError(f"HmmRegime.state_regimes must name one of {REGIMES} per state, got {self.state_regimes}")
        object.__setattr__(self, "_a", a)
        object.__setattr__(self, "_mu", np.asarray(self.means))
        object.__setattr__(self, "_var", np.asarray(self.variances))
        object.__setattr__(self, "_cols", [INPUTS.index(n) for n in self.inputs])
        center, scale = np.asarray(self.center or [0.0] * d, float), np.asarray(self.scale or [1.0] * d, float)
        if center.shape != (d,) or scale.shape != (d,) or not (scale > 0).all():
            raise ValueError(f"HmmRegime.center/scale must hold {d} values, scale positive")
        object.__setattr__(self, "_center", center)
        object.__setattr__(self, "_scale", scale)
        m = np.zeros((k, len(REGIMES)))
        m[np.arange(k), [REGIMES.index(r) for r in self.state_regimes]] = 1.0
        object.__setattr__(self, "_map", m)

    def step(self, probs: np.ndarray | None, x: np.ndarray) -> np.ndarray:
        """Return the filtered state probabilities after inputs ``x`` (INPUTS order; NaN = missing)."""
        prior = np.asarray(self.startprob) if probs is None else probs @ self._a  # type: ignore[attr-defined]
        obs = (x[self._cols] - self._center) / self._scale  # type: ignore[attr-defined]
        ok = np.isfinite(obs)
        mu, var = self._mu[:, ok], self._var[:, ok]  # type: ignore[attr-defined]
        loglik = -0.5 * (((obs[ok] - mu) ** 2) / var + np.log(2 * np.pi * var)).sum(axis=1)
        post = prior * np.exp(loglik - loglik.max())
        total = post.sum()
        if not total > 0 or not np.isfinite(total):  # every state impossible: start again from the prior
            post = np.asarray(self.startprob) * np.exp(loglik - loglik.max())
            total = post.sum()
        return post / total

    def regime_probs(self, state_probs: np.ndarray) -> np.ndarray:
        """Return the named regimes' probabilities (sums of their states')."""
        return state_probs @ self._map  # type: ignore[attr-defined, no-any-return]

    def to_json(self) -> str:
        """Return the model as JSON (read back by :func:`load_model`)."""
        return json.dumps(asdict(self), indent=1, sort_keys=True)


class RegimeModel(Protocol):
    """What the tracker needs of a classifier."""

    @property
    def trend_days(self) -> float:
        """Days of the trend window."""
        ...

    @property
    def vol_days(self) -> float:
        """Days of the volatility window."""
        ...

    @property
    def sample_ms(self) -> int:
        """The sampling step (closes at multiples of it are samples)."""
        ...

    @property
    def kind(self) -> str:
        """``hmm`` or ``rules``."""
        ...

    def step(self, probs: np.ndarray | None, x: np.ndarray) -> np.ndarray:
        """Return the next state probabilities."""
        ...

    def regime_probs(self, state_probs: np.ndarray) -> np.ndarray:
        """Return the named regimes' probabilities."""
        ...


class RegimeConfig(BaseModel):
    """Where the stream's regime comes from (``Settings.regime``, ``CRYPTOSTREAM_REGIME__...``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    source: Literal["off", "rules", "model"] = Field(
        "off", description="off: no regime (the strategies see None); rules: RuleRegime; model: a fitted HMM")
    model: Path | None = Field(None, description="the fitted model's regime.json; unset = the latest beside the "
                               "registry, <registry>/../regime (python -m training.regime fit)")
    symbol: str | None = Field(None, description="the reference price; unset = the first of symbols")
    daily_dir: Path | None = Field(None, description="daily funding_rates.csv / fear_greed.csv; unset = prices alone")
    publication_lag_hours: float = Field(0.0, ge=0.0, description="a daily value is known this long after its "
                                         "day ends")


def models_dir(registry: Path) -> Path:
    """Return where fitted models live: ``regime/`` beside the registry root (``<dir>/<version>/regime.json``, ``latest``).

    Beside, not inside: the registry's tools read a manifest in every family they find.
    """
    return Path(registry).parent / "regime"


def resolve_model(spec: str | Path | None, registry: Path | None) -> HmmRegime | RuleRegime:
    """Return the model ``spec`` names: a file, ``latest`` (of ``registry``), or ``rules`` / None (the rules)."""
    if spec is None or str(spec) == "rules":
        return RuleRegime()
    if str(spec) == "latest":
        if registry is None:
            raise ValueError("regime model 'latest' needs a registry (--registry / scoring.registry)")
        pointer = models_dir(registry) / "latest"
        if not pointer.is_file():
            raise ValueError(f"no fitted regime model beside the registry {registry} (no {pointer}); run "
                             "`python -m training.regime fit CANDLES... --registry DIR`")
        return load_model(models_dir(registry) / pointer.read_text().strip() / MODEL_FILE)
    return load_model(spec)


def load_model(path: str | Path) -> HmmRegime | RuleRegime:
    """Read a model written by :meth:`HmmRegime.to_json` (or a rules file: ``{"kind": "rules", ...}``)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"regime model {p}: cannot read it ({type(exc).__name__}: {exc}); fit one with "
                         "`python -m training.regime fit`") from None
    kind = doc.pop("kind", None)
    try:
        if kind == "rules":
            return RuleRegime(**doc)
        if kind == "hmm":
            for k in ("inputs", "startprob", "state_regimes", "center", "scale"):
                doc[k] = tuple(doc[k])
            for k in ("transmat", "means", "variances"):
                doc[k] = tuple(tuple(r) for r in doc[k])
            return HmmRegime(**doc)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"regime model {p}: malformed ({exc})") from None
    raise ValueError(f"regime model {p}: field 'kind' must be 'hmm' or 'rules', got {kind!r}")


def regime_label(named: np.ndarray) -> str:
    """Return the label of the named regimes' probabilities: the likelier direction, then the likelier vol.

    Direction and volatility are read from their marginals (``P(bull) = P(bull/high vol) +
    P(bull/low vol)``, ``P(high vol)`` the sum over directions); ties go to the earlier of
    bull, sideways, bear and of high, low.
    """
    direction = ("bull", "sideways", "bear")[int(np.argmax([named[0] + named[1], named[2] + named[3],
                                                             named[4] + named[5]]))]
    vol = "high vol" if named[0] + named[2] + named[4] >= named[1] + named[3] + named[5] else "low vol"
    return f"{direction}/{vol}"


class RegimeTracker:
    """Per bar close of one reference price: the regime known at that close (a pure state machine)."""

    VERSION = 1

    def __init__(self, model: RegimeModel, state: Mapping[str, Any] | None = None) -> None:
        """Track with ``model``; ``state`` is a :meth:`snapshot`."""
        self.model = model
        self.trend_ms = int(round(model.trend_days * DAY_MS))
        self.vol_n = max(2, int(round(model.vol_days * DAY_MS / model.sample_ms)))
        s = dict(state or {})
        self.samples: deque[tuple[int, float]] = deque(tuple(x) for x in s.get("samples", []))  # type: ignore[misc]
        self.rets: deque[float] = deque(s.get("rets", []), maxlen=self.vol_n)
        probs = s.get("probs")
        self.probs: np.ndarray | None = None if probs is None else np.asarray(probs, float)
        last = s.get("last")
        self.last: RegimeState | None = None if last is None else RegimeState(
            int(last[0]), str(last[1]), float(last[2]), tuple(last[3]))

    def inputs(self, ts: int, price: float, daily: Mapping[str, float] | None) -> np.ndarray | None:
        """Take the sample of close ``ts`` and return the inputs (INPUTS order), or None while warming up."""
        logp = math.log(price)
        if self.samples:
            prev_ts, prev = self.samples[-1]
            if ts <= prev_ts:
                return None
            self.rets.append(logp - prev)
        self.samples.append((ts, logp))
        horizon = ts - self.trend_ms
        while len(self.samples) > 1 and self.samples[1][0] <= horizon:
            self.samples.popleft()
        first_ts, first = self.samples[0]
        if first_ts > horizon or len(self.rets) < self.vol_n:
            return None
        sd = float(np.std(np.fromiter(self.rets, float), ddof=1))
        vol = math.log(max(sd, 1e-12) * math.sqrt(_HOURS_PER_YEAR * HOUR_MS / self.model.sample_ms))
        d = daily or {}
        return np.array([logp - first, vol, d.get("funding", math.nan), d.get("sentiment", math.nan)], float)

    def on_close(self, ts: int, price: float, daily: Mapping[str, float] | None = None) -> RegimeState | None:
        """Return the regime known at bar close ``ts`` (the last sample's, between samples)."""
        if ts % self.model.sample_ms or not (price > 0 and math.isfinite(price)):
            return self.last
        x = self.inputs(ts, price, daily)
        if x is None:
            return self.last
        self.probs = self.model.step(self.probs, x)
        named = self.model.regime_probs(self.probs)
        self.last = RegimeState(ts, regime_label(named), float(np.clip(named[0] + named[1] - named[4] - named[5],
                                                                       -1.0, 1.0)), tuple(float(v) for v in named))
        return self.last

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data."""
        return {"kind": "regime", "version": self.VERSION, "samples": [list(x) for x in self.samples],
                "rets": list(self.rets), "probs": None if self.probs is None else self.probs.tolist(),
                "last": None if self.last is None else [self.last.ts, self.last.label, self.last.score,
                                                        list(self.last.probs)]}


# regime input -> (daily group of flows/sources/daily.py, raw column, scale, shift):
# funding in basis points, Fear & Greed as fng / 100 - 0.5
REGIME_DAILY: dict[str, tuple[str, str, float, float]] = {
    "funding": ("funding", "funding_mean", 1e4, 0.0),
    "sentiment": ("fear_greed", "fng", 0.01, -0.5),
}


@dataclass(frozen=True, eq=False)
class DailyInputs:
    """The regime's daily inputs: per input, the times its values become known (ms, increasing) and the values."""

    series: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def at(self, ts_ms: int) -> dict[str, float]:
        """Return each input's last value known strictly before ``ts_ms`` (inputs not yet known are absent)."""
        out = {}
        for name, (known, values) in self.series.items():
            i = int(np.searchsorted(known, ts_ms, side="left")) - 1
            if i >= 0:
                out[name] = float(values[i])
        return out

    @property
    def names(self) -> tuple[str, ...]:
        """The inputs present."""
        return tuple(self.series)


def daily_inputs(feed: DailyFeed | None) -> DailyInputs:
    """Return the regime's inputs from a :class:`flows.sources.daily.DailyFeed` (None: prices alone).

    The feed stamps a value of day D with ``D + 1 day + publication lag`` (its ``known_at``); a
    group the source does not hold (``DailyFeed.has``: a missing file) leaves its input out.
    """
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (grp, col, scale, shift) in REGIME_DAILY.items():
        if feed is None or not feed.has(grp):
            continue
        h = feed.history(grp)
        known = h["known_at"].dt.as_unit("ms").astype("int64").to_numpy()
        series[name] = (known, h[col].to_numpy(float) * scale + shift)
    return DailyInputs(series)


def load_daily_inputs(directory: str | Path | None, publication_lag_hours: float = 0.0) -> DailyInputs:
    """Return the regime's inputs from the daily files of ``directory`` (``regime.daily_dir``; None: none).

    A :class:`~flows.sources.daily.DailyFeed` over a :class:`~flows.sources.daily.FileSource`
    (``funding_rates.csv``, ``fear_greed.csv``) with ``publication_lag_hours`` as both groups' lag.

    Raises:
        ValueError: for a negative lag, a missing directory, or a bad file (naming it and the field).
    """
    from flows.errors import ProviderError
    from flows.sources.daily import DailyFeed, FileSource

    if publication_lag_hours < 0 or not math.isfinite(publication_lag_hours):
        raise ValueError(f"publication_lag_hours must be >= 0, got {publication_lag_hours}")
    if directory is None:
        return DailyInputs()
    if not Path(directory).is_dir():
        raise ValueError(f"regime daily_dir {directory} is not a directory")
    lag = timedelta(hours=publication_lag_hours)
    try:
        return daily_inputs(DailyFeed(FileSource(Path(directory)), {g: lag for g, *_ in REGIME_DAILY.values()}))
    except ProviderError as exc:
        raise ValueError(str(exc)) from None


def classify(times_ms: Sequence[int] | np.ndarray, prices: Sequence[float] | np.ndarray, model: RegimeModel,
             daily: Any = None) -> list[RegimeState | None]:
    """Run a tracker over bar closes ``times_ms`` with their reference ``prices``; the regime known at each.

    ``daily`` is a :class:`DailyInputs` (or anything with
    ``at(ts_ms) -> dict``), or None for prices alone.  The stream and the history use this
    same tracker, so their labels are equal by construction.
    """
    tracker = RegimeTracker(model)
    out: list[RegimeState | None] = []
    for ts, px in zip(np.asarray(times_ms, np.int64).tolist(), np.asarray(prices, float).tolist(), strict=True):
        out.append(tracker.on_close(ts, px, None if daily is None or ts % model.sample_ms else daily.at(ts)))
    return out


class DailyAt(Protocol):
    """The daily inputs known at a time (:class:`DailyInputs`)."""

    def at(self, ts_ms: int) -> dict[str, float]:
        """Return each input's value known before ``ts_ms``."""
        ...


class RegimeFeed:
    """The decision step's regime: a tracker of one symbol's closes, with the daily inputs known at each."""

    def __init__(self, symbol: str, model: RegimeModel, daily: DailyAt | None = None) -> None:
        """Track ``symbol`` with ``model``; ``daily`` supplies funding and sentiment (None: prices alone)."""
        self.symbol, self.model, self.daily = symbol, model, daily
        self.tracker = RegimeTracker(model)

    def on_close(self, ts: int, prices: Mapping[str, float]) -> RegimeState | None:
        """Return the regime known at close ``ts`` from the symbol's close in ``prices``."""
        px = prices.get(self.symbol)
        if px is None:
            return self.tracker.last
        daily = None if self.daily is None or ts % self.model.sample_ms else self.daily.at(ts)
        return self.tracker.on_close(ts, px, daily)

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`RegimeTracker.snapshot`."""
        self.tracker = RegimeTracker(self.model, state)


def state_values(s: RegimeState) -> dict[str, float]:
    """Return a regime as the feature group's values: label code (index in REGIMES), score, probabilities."""
    return dict(zip(REGIME_FEATURES, (float(REGIMES.index(s.label)), float(s.score), *map(float, s.probs)),
                    strict=True))


def state_rows(states: Sequence[RegimeState | None], symbols: Sequence[str]) -> list[Any]:
    """Return the stored rows of ``states``: each new state (first seen at its own close), once per symbol.

    ``ts`` is the close the state was computed at, the moment it became known; the rows are
    ``flows.records.FeatureRow`` of the ``regime`` group, the same the flow writes.
    """
    from flows.records import FeatureRow

    out: list[Any] = []
    last = None
    for s in states:
        if s is None or s.ts == last:
            continue
        last = s.ts
        values = state_values(s)
        out += [FeatureRow(REGIME_TABLE, sym, REGIME_TIMEFRAME, int(s.ts), dict(values)) for sym in symbols]
    return out


class RegimeRowEmitter:
    """The flow's regime rows: a :class:`RegimeFeed` of the reference symbol's closes; new states as rows.

    Picklable (the flow keeps it as recoverable state), so a restart continues the same tracker.
    """

    def __init__(self, feed: RegimeFeed, symbols: Sequence[str]) -> None:
        """Emit ``feed``'s new states once per symbol of ``symbols``."""
        self.feed, self.symbols = feed, tuple(symbols)

    def on_close(self, ts: int, price: float) -> list[Any]:
        """Return the rows of the regime known at close ``ts`` of the reference symbol, if it is new."""
        s = self.feed.on_close(ts, {self.feed.symbol: price})
        return state_rows([s], self.symbols) if s is not None and s.ts == ts else []

    def snapshot(self) -> dict[str, Any]:
        """Return the tracker's state as plain data (the flow's recovery)."""
        return self.feed.tracker.snapshot()


def build_feed(cfg: RegimeConfig, symbols: Sequence[str], tf_ms: int, registry: Path) -> RegimeFeed | None:
    """Return the feed the settings ask for (None when ``source`` is off).

    Raises:
        ValueError: naming the field, for a symbol not traded, a model that cannot be read, or a
            timeframe that does not divide the model's sampling step.
    """
    if cfg.source == "off":
        return None
    symbol = cfg.symbol or symbols[0]
    if symbol not in symbols:
        raise ValueError(f"regime.symbol: {symbol} is not traded (symbols: {', '.join(symbols)})")
    model = RuleRegime() if cfg.source == "rules" else resolve_model(cfg.model or "latest", registry)
    if model.sample_ms % tf_ms:
        raise ValueError(f"regime: the trading timeframe ({tf_ms} ms) must divide the model's sampling step "
                         f"({model.sample_ms} ms); trade 1m, 5m or 1h bars")
    return RegimeFeed(symbol, model, load_daily_inputs(cfg.daily_dir, cfg.publication_lag_hours)
                      if cfg.daily_dir is not None else None)
