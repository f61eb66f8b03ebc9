-- 0008: risk decisions the engine refused or cut, and the portfolio's full state per bar.
--
-- Every rejection of the risk engine (a limit, a circuit breaker, the kill switch)
-- is kept with its rule, reason and the sizes asked for and allowed.  One rule
-- fires at most once per symbol and decision bar, so that is the natural key: a
-- replayed decision rewrites its row.

CREATE TABLE IF NOT EXISTS risk_events (
    symbol     text COLLATE "C" NOT NULL,
    ts         timestamptz      NOT NULL,  -- decision time (bar close)
    rule       text COLLATE "C" NOT NULL,  -- e.g. max_position, drawdown, stale_data, kill_switch
    reason     text             NOT NULL,
    requested  double precision,           -- quantity change asked for (base units)
    allowed    double precision,           -- quantity change allowed
    run_id     text COLLATE "C",
    created_at timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, ts, rule)
);

SELECT create_hypertable('risk_events', by_range('ts', INTERVAL '30 days'), if_not_exists => TRUE);

CREATE INDEX IF NOT EXISTS risk_events_rule_ts_idx ON risk_events (rule, ts DESC);

-- The portfolio's exact state (flows.portfolio.Portfolio.to_state()) beside the summary
-- columns, so a restart without Bytewax recovery can restore it from the last row.
ALTER TABLE portfolio_state ADD COLUMN IF NOT EXISTS leverage double precision;
ALTER TABLE portfolio_state ADD COLUMN IF NOT EXISTS state jsonb;
