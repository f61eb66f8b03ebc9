-- 0006: multi-timeframe roll-up of bars with time_bucket (works on the Apache edition).
--
-- The flow builds every configured timeframe in-stream; this is the query-side
-- equivalent for any other bucket, e.g. 4h bars from 1m bars:
--
--   SELECT * FROM bars_rollup('1m', INTERVAL '4 hours', '2026-01-01', '2026-02-01');
--
-- Buckets are aligned like time_bucket (days at 00:00 UTC, weeks on Monday).
-- source_bars says how many source bars a bucket holds, so callers can drop an
-- incomplete last bucket (e.g. source_bars < 240 for 4h from 1m).
-- vwap is the volume-weighted mean of the source vwaps; the last close when the
-- bucket traded nothing.  On the community build, sql/community adds bars_1h as a
-- continuous aggregate with the same columns.

CREATE OR REPLACE FUNCTION bars_rollup(
    src_timeframe text,
    bucket        interval,
    start_ts      timestamptz,
    end_ts        timestamptz,
    symbols       text[] DEFAULT NULL
)
RETURNS TABLE (
    symbol           text,
    ts               timestamptz,
    open             double precision,
    high             double precision,
    low              double precision,
    close            double precision,
    volume           double precision,
    quote_volume     double precision,
    trade_count      bigint,
    vwap             double precision,
    taker_buy_volume double precision,
    source_bars      bigint
)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT b.symbol,
           time_bucket(bucket, b.ts),
           first(b.open, b.ts),
           max(b.high),
           min(b.low),
           last(b.close, b.ts),
           sum(b.volume),
           sum(b.quote_volume),
           sum(b.trade_count)::bigint,
           coalesce(sum(b.vwap * b.volume) / nullif(sum(b.volume) FILTER (WHERE b.vwap IS NOT NULL), 0),
                    last(b.close, b.ts)),
           sum(b.taker_buy_volume),
           count(*)
    FROM bars AS b
    WHERE b.timeframe = src_timeframe
      AND b.ts >= start_ts
      AND b.ts < end_ts
      AND (symbols IS NULL OR b.symbol = ANY (symbols))
    GROUP BY b.symbol, time_bucket(bucket, b.ts)
    ORDER BY 1, 2
$$;

COMMENT ON FUNCTION bars_rollup(text, interval, timestamptz, timestamptz, text[]) IS
    'Roll bars of src_timeframe up into time_bucket(bucket) bars over [start_ts, end_ts).';
