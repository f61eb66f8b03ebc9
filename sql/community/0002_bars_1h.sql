-- community 0002: hourly bars from 1m bars as a continuous aggregate (community build only).
--
-- Same columns and semantics as bars_rollup('1m', INTERVAL '1 hour', ...) from
-- migration 0006; real-time (materialized_only = false), so the current hour is
-- included from the raw bars.  Refreshed every 15 minutes over the last 3 days,
-- which also picks up late revisions of recent 1m bars.

CREATE MATERIALIZED VIEW IF NOT EXISTS bars_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT symbol,
       time_bucket(INTERVAL '1 hour', ts) AS ts,
       first(open, ts)                    AS open,
       max(high)                          AS high,
       min(low)                           AS low,
       last(close, ts)                    AS close,
       sum(volume)                        AS volume,
       sum(quote_volume)                  AS quote_volume,
       sum(trade_count)                   AS trade_count,
       sum(vwap * volume) / nullif(sum(volume), 0) AS vwap,
       sum(taker_buy_volume)              AS taker_buy_volume,
       count(*)                           AS source_bars
FROM bars
WHERE timeframe = '1m'
GROUP BY symbol, time_bucket(INTERVAL '1 hour', ts)
WITH NO DATA;

SELECT add_continuous_aggregate_policy('bars_1h',
    start_offset      => INTERVAL '3 days',
    end_offset        => INTERVAL '1 hour',
    schedule_interval => INTERVAL '15 minutes',
    if_not_exists     => TRUE);
