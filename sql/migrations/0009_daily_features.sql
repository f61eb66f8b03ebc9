-- 0009: daily feature groups (on-chain, funding, sentiment).
-- Generated from flows/feature_groups.py by `python -m flows.feature_groups sql fear_greed hash_rate difficulty funding`;
-- tests/unit/flows/test_feature_groups.py checks this file against the registry.
-- ts is when the values became known: the end of their day plus the source's publication lag.
CREATE TABLE IF NOT EXISTS daily_fear_greed (
    symbol     text COLLATE "C" NOT NULL,
    timeframe  text COLLATE "C" NOT NULL,
    ts         timestamptz      NOT NULL,
    fng        double precision,
    fng_chg_1  double precision,
    fng_z_30   double precision,
    run_id     text COLLATE "C",
    created_at timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, ts)
);

SELECT create_hypertable('daily_fear_greed', by_range('ts', INTERVAL '30 days'), if_not_exists => TRUE);

COMMENT ON TABLE daily_fear_greed IS
    'Crypto Fear & Greed index (alternative.me): level, 1-day change, 30-day z-score; ts = end of day + publication lag.';

CREATE TABLE IF NOT EXISTS daily_hash_rate (
    symbol          text COLLATE "C" NOT NULL,
    timeframe       text COLLATE "C" NOT NULL,
    ts              timestamptz      NOT NULL,
    hr_ribbon       double precision,
    hr_capitulation double precision,
    hr_mom_30       double precision,
    run_id          text COLLATE "C",
    created_at      timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, ts)
);

SELECT create_hypertable('daily_hash_rate', by_range('ts', INTERVAL '30 days'), if_not_exists => TRUE);

COMMENT ON TABLE daily_hash_rate IS
    'Bitcoin hash-rate momentum: 30/60-day mean ribbon, capitulation flag, 30-day momentum; ts = end of day + publication lag.';

CREATE TABLE IF NOT EXISTS daily_difficulty (
    symbol      text COLLATE "C" NOT NULL,
    timeframe   text COLLATE "C" NOT NULL,
    ts          timestamptz      NOT NULL,
    diff_chg_14 double precision,
    diff_chg_56 double precision,
    run_id      text COLLATE "C",
    created_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, ts)
);

SELECT create_hypertable('daily_difficulty', by_range('ts', INTERVAL '30 days'), if_not_exists => TRUE);

COMMENT ON TABLE daily_difficulty IS
    'Bitcoin mining difficulty change over 14 and 56 days; ts = end of day + publication lag.';

CREATE TABLE IF NOT EXISTS daily_funding (
    symbol     text COLLATE "C" NOT NULL,
    timeframe  text COLLATE "C" NOT NULL,
    ts         timestamptz      NOT NULL,
    fund_mean  double precision,
    fund_z_30  double precision,
    fund_abs   double precision,
    run_id     text COLLATE "C",
    created_at timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, ts)
);

SELECT create_hypertable('daily_funding', by_range('ts', INTERVAL '30 days'), if_not_exists => TRUE);

COMMENT ON TABLE daily_funding IS
    'Binance BTC perpetual funding: daily mean, its 30-day z-score, daily mean absolute rate; ts = end of day + publication lag.';
