-- 0010: the market regime feature group (label code, score, filtered probabilities).
-- Generated from flows/feature_groups.py by `python -m flows.feature_groups sql regime`;
-- tests/unit/flows/test_feature_groups.py checks this file against the registry.
-- ts is when the values became known: the bar close the regime was sampled at (filtered: nothing later used).
CREATE TABLE IF NOT EXISTS regime_features (
    symbol                     text COLLATE "C" NOT NULL,
    timeframe                  text COLLATE "C" NOT NULL,
    ts                         timestamptz      NOT NULL,
    regime_code                double precision,
    regime_score               double precision,
    regime_p_bull_high_vol     double precision,
    regime_p_bull_low_vol      double precision,
    regime_p_sideways_high_vol double precision,
    regime_p_sideways_low_vol  double precision,
    regime_p_bear_high_vol     double precision,
    regime_p_bear_low_vol      double precision,
    run_id                     text COLLATE "C",
    created_at                 timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, ts)
);

SELECT create_hypertable('regime_features', by_range('ts', INTERVAL '30 days'), if_not_exists => TRUE);

COMMENT ON TABLE regime_features IS
    'Market regime (flows/operators/regime.py): label code (index in REGIMES), score P(bull) - P(bear), filtered probabilities; ts = the sampled bar close.';
