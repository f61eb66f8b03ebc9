-- 0005: inputs the flow refused, kept raw with the reason.
--
-- The same bad message seen twice (a replay, a reconnect that re-sends) must stay
-- one row, but payloads can be large, so the key holds their MD5 (a generated
-- column: writers cannot get it wrong) rather than the payload itself.  MD5 is a
-- dedupe key here, not a security measure.

CREATE TABLE IF NOT EXISTS dead_letters (
    ts          timestamptz NOT NULL,  -- when the input was received
    source      text COLLATE "C" NOT NULL,  -- e.g. binance_ws, rest_backfill, replay
    symbol      text COLLATE "C",      -- NULL when it could not be parsed
    reason      text        NOT NULL,
    payload     text        NOT NULL,  -- raw, as received
    payload_md5 bytea       NOT NULL GENERATED ALWAYS AS (decode(md5(payload), 'hex')) STORED,
    run_id      text COLLATE "C",
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, ts, payload_md5)
);

SELECT create_hypertable('dead_letters', by_range('ts', INTERVAL '7 days'), if_not_exists => TRUE);

CREATE INDEX IF NOT EXISTS dead_letters_reason_ts_idx ON dead_letters (reason, ts DESC);
