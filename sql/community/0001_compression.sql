-- community 0001: native compression of older chunks (Timescale community build only;
-- `python -m infra.db migrate` skips this directory when timescaledb.license = 'apache').
--
-- Segment by the series key so a compressed chunk answers "one symbol's range"
-- by decompressing only that symbol's segments; order by time, newest first.
-- Chunks compress 30 days after they end: late trades and replays of recent days
-- still upsert uncompressed rows, and older upserts still work (TimescaleDB
-- decompresses the affected segment).

ALTER TABLE bars SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol, timeframe',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('bars', INTERVAL '30 days', if_not_exists => TRUE);

ALTER TABLE bar_features SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol, timeframe',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('bar_features', INTERVAL '30 days', if_not_exists => TRUE);

ALTER TABLE cross_asset_features SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol, timeframe',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('cross_asset_features', INTERVAL '60 days', if_not_exists => TRUE);

ALTER TABLE predictions SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol, timeframe, model',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('predictions', INTERVAL '30 days', if_not_exists => TRUE);
