-- 0001: OHLCV bars, the history every other table is derived from.
--
-- One row per (symbol, timeframe, bar open time).  The natural primary key makes
-- every write an idempotent upsert: a replay, a restart or a late trade that
-- revises a bar rewrites the same row instead of adding one.
--
-- Chunks of 7 days: 100 symbols of 1m bars are ~1M rows (~150 MB with indexes)
-- per chunk, well inside the "a chunk's indexes fit in memory" rule of thumb,
-- and retention can drop history a week at a time.
--
-- "Latest bar of a symbol" (WHERE symbol = $1 AND timeframe = $2 ORDER BY ts DESC
-- LIMIT 1) is served by a backward scan of the primary key index, so no separate
-- (symbol, timeframe, ts DESC) index is kept: it would be a third index to maintain on
-- the hottest table, for no read benefit.  Time-range scans over all symbols use
-- chunk exclusion plus TimescaleDB's default (ts DESC) index.
--
-- Identifier columns (symbol, timeframe, run_id, and the ids and names in later
-- migrations) use COLLATE "C": they are ASCII codes where byte order is the right
-- order, and byte comparison lets PostgreSQL use its fast sort and index paths
-- instead of the locale's strcoll (measured: ~1.3-1.6x faster upserts).

CREATE TABLE IF NOT EXISTS bars (
    symbol           text COLLATE "C" NOT NULL,
    timeframe        text COLLATE "C" NOT NULL,
    ts               timestamptz      NOT NULL,  -- bar open time; the bar covers [ts, ts + timeframe)
    open             double precision NOT NULL,
    high             double precision NOT NULL,
    low              double precision NOT NULL,
    close            double precision NOT NULL,
    volume           double precision NOT NULL,
    -- The next four are NULL when a source cannot provide them (plain ccxt OHLCV
    -- backfills have none of them); bars built from trades always have them.
    quote_volume     double precision,
    trade_count      bigint,
    vwap             double precision,
    taker_buy_volume double precision,
    run_id           text COLLATE "C",
    PRIMARY KEY (symbol, timeframe, ts)
);

SELECT create_hypertable('bars', by_range('ts', INTERVAL '7 days'), if_not_exists => TRUE);

COMMENT ON TABLE bars IS 'OHLCV bars; ts is the bar open time, the bar covers [ts, ts + timeframe).';
