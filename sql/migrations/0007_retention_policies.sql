-- 0007: default retention per hypertable, read by `python -m infra.db retention --all-default`.
--
-- keep = NULL means never drop.  Bars are the training history and the source
-- every other table can be rebuilt from; orders, fills and portfolio snapshots
-- are the audit trail: both are kept.  Features can be recomputed from bars.
-- Operators change a policy with UPDATE; this migration never overwrites one.

CREATE TABLE IF NOT EXISTS retention_policies (
    hypertable text PRIMARY KEY,
    keep       interval CHECK (keep IS NULL OR keep > INTERVAL '0'),
    note       text
);

INSERT INTO retention_policies (hypertable, keep, note) VALUES
    ('bars',                 NULL,                'training history; everything else derives from it'),
    ('bar_features',         INTERVAL '365 days', 'recomputable from bars'),
    ('cross_asset_features', INTERVAL '365 days', 'recomputable from bars'),
    ('predictions',          INTERVAL '180 days', 'recomputable from bars and the model registry'),
    ('orders',               NULL,                'audit trail'),
    ('fills',                NULL,                'audit trail'),
    ('portfolio_state',      NULL,                'audit trail'),
    ('dead_letters',         INTERVAL '30 days',  'kept long enough to investigate and replay')
ON CONFLICT (hypertable) DO NOTHING;
