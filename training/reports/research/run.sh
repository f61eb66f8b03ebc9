#!/usr/bin/env bash
# The research run of issue 16, as it was run (from the project root, after infra/setup):
# tuning on development windows only (2022-2023, trained from 2020-09), then the 2024 hold-out once,
# the gate, and the legacy strategy on the same windows for comparison.  About 10 minutes on 2 cores.
set -euo pipefail
D=${DATA:-../shared/data}/binance-spot-1h
FILES="$D/BTC_USDT-1h.parquet $D/ETH_USDT-1h.parquet $D/SOL_USDT-1h.parquet $D/BNB_USDT-1h.parquet $D/XRP_USDT-1h.parquet"
R=${OUT:-var/research}
BASE=training/reports/research/base.yaml
py=.venv/bin/python
$py -m training.tune $FILES --train-start 2020-09-01 --start 2022-01-01 --end 2024-01-01 --holdout-start 2024-01-01 \
  --every quarter --config $BASE --trials 16 --seed 7 \
  --space strategy.params.enter_multiple=log:0.25:4 --space strategy.params.exit_multiple=float:0:2 \
  --space strategy.params.min_hold_bars=int:1:48 --space strategy.params.allow_short=choice:true,false \
  --space train.horizon=choice:1,4,12 --out $R/tune
H=$($py -c "import json;print(json.load(open('$R/tune/best.json'))['params'].get('train.horizon',1))")
$py -m training.walkforward $FILES --train-start 2020-09-01 --start 2022-01-01 --end 2024-01-01 --every quarter \
  --config $BASE --set strategy.name=legacy --out $R/dev-legacy
# the hold-out, once, with every choice fixed by the tuning above
$py -m training.walkforward $FILES --train-start 2020-09-01 --start 2024-01-01 --end 2025-01-01 --every quarter \
  --config $R/tune/best.yaml --horizon $H --out $R/holdout
$py -m training.gate --walkforward $R/holdout --tuning $R/tune --config $R/tune/best.yaml \
  --registry $R/holdout/registry/window-3 || echo "gate exit $? (1 = FAIL)"
$py -m training.walkforward $FILES --train-start 2020-09-01 --start 2024-01-01 --end 2025-01-01 --every quarter \
  --config $BASE --set strategy.name=legacy --out $R/holdout-legacy
