"""Where the daily feature groups come from (``Settings.daily``), and the feed built from it.

The environment sets them with ``CRYPTOSTREAM_DAILY__<FIELD>``, e.g.
``CRYPTOSTREAM_DAILY__SOURCE=files`` and ``CRYPTOSTREAM_DAILY__FOLDER=../shared/data/daily-onchain-sentiment``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

if TYPE_CHECKING:
    from flows.operators.daily_features import DailyFeatures


class DailyConfig(BaseModel):
    """The daily providers (on-chain, funding, sentiment) and their publication lags."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    source: Literal["none", "files", "http"] = Field(
        "none", description="none: no daily groups (v1 models need none); files: the CSVs of `folder`; "
        "http: the public APIs below (and ccxt binanceusdm for funding)")
    folder: Path | None = Field(None, description="folder of fear_greed.csv, hashrate.csv, difficulty.csv, "
                                "funding_rates.csv (source=files)")
    fear_greed_url: str = Field("https://api.alternative.me/fng/", description="alternative.me Fear & Greed endpoint")
    chart_url: str = Field("https://api.blockchain.info/charts", description="chain statistics, blockchain.info "
                           "charts format (<url>/hash-rate, <url>/difficulty)")
    chart_api_key: SecretStr | None = Field(None, description="key of the chain-statistics API, if it needs one")
    funding_url: str | None = Field(None, description="Binance USD-M REST base override (the replay exchange); "
                                    "unset = Binance")
    timeout_s: float = Field(10.0, gt=0.0, description="HTTP timeout per provider request")
    lag_minutes: dict[str, float] = Field(default_factory=dict, description="publication lag per group "
                                          "(fear_greed, hash_rate, difficulty, funding) in minutes after the "
                                          "end of the value's day; unset = the registry's lag")
    poll_minutes: float = Field(15.0, gt=0.0, description="live: how often the side input asks the providers "
                                "again once a group's next value is due")

    @field_validator("lag_minutes")
    @classmethod
    def _known_groups(cls, value: dict[str, float]) -> dict[str, float]:
        from flows.feature_groups import daily_groups

        known = {g.name for g in daily_groups()}
        for k, v in value.items():
            if k not in known:
                raise ValueError(f"unknown daily group {k!r}; known: {', '.join(sorted(known))}")
            if v < 0:
                raise ValueError(f"lag of {k} must be >= 0 minutes")
        return value


def open_daily(cfg: DailyConfig) -> DailyFeatures | None:
    """Return the daily features of the configured source, or ``None`` when ``source`` is none."""
    from flows.operators.daily_features import DailyFeatures, lags_from_minutes
    from flows.sources.daily import DailyFeed, DailySource, FileSource, HttpSource, make_usdm

    if cfg.source == "none":
        return None
    src: DailySource
    if cfg.source == "files":
        if cfg.folder is None:
            from flows.errors import SettingsError

            raise SettingsError("daily.folder (env CRYPTOSTREAM_DAILY__FOLDER) must name the folder of the daily "
                                "CSV files when daily.source=files")
        src = FileSource(Path(cfg.folder))
    else:
        key = cfg.chart_api_key.get_secret_value() if cfg.chart_api_key else None
        src = HttpSource(cfg.fear_greed_url, cfg.chart_url, key,
                         make_usdm(cfg.funding_url, timeout=int(cfg.timeout_s * 1000)), cfg.timeout_s)
    return DailyFeatures(DailyFeed(src, lags_from_minutes(cfg.lag_minutes)))
