-- 0002: feature history, the offline store Feast reads (PostgreSQLSource).
--
-- Wide, not long.  One row per (symbol, timeframe, ts) with one double precision
-- column per feature, because:
--   * Feast's PostgreSQLSource expects exactly that shape: one row per entity and
--     event timestamp, feature columns, a created timestamp.  A long table
--     (symbol, ts, name, value) would need a pivot view that Feast re-runs on
--     every point-in-time join.
--   * Readers want whole feature vectors (training sets, the scorer, analysts):
--     a wide row is one index probe; long is 22 rows per bar and a pivot.
--   * Long stores the key columns once per value: ~4x the bytes for 22 features.
--   * Its flexibility (add a feature without DDL) is the thing we do not want: a
--     new feature changes model inputs and belongs in a migration
--     (ALTER TABLE bar_features ADD COLUMN ..., instant in PostgreSQL) and in the
--     feature catalog, reviewed together.
-- One wide table per feature view (bar_features, cross_asset_features) because
-- the views are computed at different steps of the flow and written separately.
--
-- ts is the time the features became known: the close of the bar they were
-- computed from (bar open + timeframe), never earlier, so point-in-time joins
-- cannot leak.  created_at is Feast's created timestamp column.

CREATE TABLE IF NOT EXISTS bar_features (
    symbol          text COLLATE "C" NOT NULL,
    timeframe       text COLLATE "C" NOT NULL,
    ts              timestamptz      NOT NULL,  -- bar close: when these values became known
    ret_1           double precision,
    ret_5           double precision,
    ret_15          double precision,
    ret_60          double precision,
    rv_15           double precision,
    rv_60           double precision,
    rsi_14          double precision,
    macd            double precision,
    macd_signal     double precision,
    macd_hist       double precision,
    bb_pctb         double precision,
    bb_bandwidth    double precision,
    atr_14          double precision,
    volume_z_60     double precision,
    vwap_dist       double precision,
    taker_imbalance double precision,
    trade_count     double precision,
    hl_range        double precision,
    hour_sin        double precision,
    hour_cos        double precision,
    dow_sin         double precision,
    dow_cos         double precision,
    run_id          text COLLATE "C",
    created_at      timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, ts)
);

SELECT create_hypertable('bar_features', by_range('ts', INTERVAL '7 days'), if_not_exists => TRUE);

COMMENT ON TABLE bar_features IS
    'Per-symbol bar features (wide: one column per feature); ts = bar close, when the values became known.';

-- Cross-asset step: all symbols of one bar time at once; a few columns per row,
-- so 30-day chunks keep the chunk count low.
CREATE TABLE IF NOT EXISTS cross_asset_features (
    symbol      text COLLATE "C" NOT NULL,
    timeframe   text COLLATE "C" NOT NULL,
    ts          timestamptz      NOT NULL,  -- bar close
    corr_btc_60 double precision,
    beta_btc_60 double precision,
    ret_rel_xs  double precision,
    run_id      text COLLATE "C",
    created_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, ts)
);

SELECT create_hypertable('cross_asset_features', by_range('ts', INTERVAL '30 days'), if_not_exists => TRUE);

COMMENT ON TABLE cross_asset_features IS
    'Cross-asset features (correlation and beta to BTC, cross-sectional relative return); ts = bar close.';
