-- 0003: model outputs, one row per (symbol, timeframe, decision time, model).
--
-- ts is the decision time (the close of the bar that was scored).  Re-scoring the
-- same bar with the same model (replay, restart) upserts the same row.

CREATE TABLE IF NOT EXISTS predictions (
    symbol        text COLLATE "C" NOT NULL,
    timeframe     text COLLATE "C" NOT NULL,
    ts            timestamptz      NOT NULL,
    model         text COLLATE "C" NOT NULL,  -- e.g. lightgbm, lstm, gnn, ensemble, ppo
    model_version text COLLATE "C" NOT NULL,
    prob_up       double precision,
    confidence    double precision,
    signal        smallint         NOT NULL CHECK (signal IN (-1, 0, 1)),
    payload       jsonb,                      -- per-member outputs, feature hash, latency ...
    run_id        text COLLATE "C",
    created_at    timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, ts, model)
);

SELECT create_hypertable('predictions', by_range('ts', INTERVAL '7 days'), if_not_exists => TRUE);

-- The primary key serves "latest prediction of a symbol"; this one serves
-- "latest (or a range of) predictions of one model for a symbol".
CREATE INDEX IF NOT EXISTS predictions_model_symbol_ts_idx
    ON predictions (model, symbol, timeframe, ts DESC);
