-- 0004: orders, fills and portfolio snapshots written by the execution step.
--
-- Low volume (a few rows per bar at most), so 30-day chunks.  Keys are the ids
-- the execution step already makes idempotent: the deterministic client order id
-- and the exchange's (or paper broker's) fill id.

-- An order row is upserted on every state change.  ts is the order's creation
-- time, so it never moves and (client_order_id, ts) stays the same row;
-- updated_at is the time of the latest change.
CREATE TABLE IF NOT EXISTS orders (
    client_order_id   text COLLATE "C" NOT NULL,
    ts                timestamptz      NOT NULL,
    symbol            text COLLATE "C" NOT NULL,
    side              text             NOT NULL CHECK (side IN ('buy', 'sell')),
    type              text             NOT NULL,  -- market, limit, ...
    qty               double precision NOT NULL CHECK (qty > 0),
    price             double precision,            -- NULL for market orders
    status            text             NOT NULL,  -- new, open, partially_filled, filled, canceled, rejected ...
    exchange_order_id text COLLATE "C",
    reason            text,                        -- why it was placed, or why it was rejected
    mode              text             NOT NULL,  -- paper, live, backtest
    run_id            text COLLATE "C",
    updated_at        timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (client_order_id, ts)
);

SELECT create_hypertable('orders', by_range('ts', INTERVAL '30 days'), if_not_exists => TRUE);

CREATE INDEX IF NOT EXISTS orders_symbol_ts_idx ON orders (symbol, ts DESC);
CREATE INDEX IF NOT EXISTS orders_status_ts_idx ON orders (status, ts DESC);

CREATE TABLE IF NOT EXISTS fills (
    fill_id         text COLLATE "C" NOT NULL,  -- exchange trade id, or the paper broker's id
    client_order_id text COLLATE "C" NOT NULL,
    ts              timestamptz      NOT NULL,
    symbol          text COLLATE "C" NOT NULL,
    side            text             NOT NULL CHECK (side IN ('buy', 'sell')),
    qty             double precision NOT NULL CHECK (qty > 0),
    price           double precision NOT NULL,
    fee             double precision NOT NULL DEFAULT 0,
    fee_currency    text,
    liquidity       text CHECK (liquidity IN ('maker', 'taker')),
    run_id          text COLLATE "C",
    created_at      timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (fill_id, ts)
);

SELECT create_hypertable('fills', by_range('ts', INTERVAL '30 days'), if_not_exists => TRUE);

CREATE INDEX IF NOT EXISTS fills_symbol_ts_idx ON fills (symbol, ts DESC);
CREATE INDEX IF NOT EXISTS fills_client_order_id_idx ON fills (client_order_id, ts DESC);

-- One snapshot per run and time (per bar, or per fill).  positions holds
-- {symbol: {qty, avg_price, market_value, unrealized_pnl, ...}}.
CREATE TABLE IF NOT EXISTS portfolio_state (
    ts             timestamptz      NOT NULL,
    run_id         text COLLATE "C" NOT NULL,
    equity         double precision NOT NULL,
    cash           double precision NOT NULL,
    gross_exposure double precision,
    net_exposure   double precision,
    drawdown       double precision,
    realized_pnl   double precision,
    unrealized_pnl double precision,
    daily_pnl      double precision,
    positions      jsonb            NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (run_id, ts)
);

SELECT create_hypertable('portfolio_state', by_range('ts', INTERVAL '30 days'), if_not_exists => TRUE);
