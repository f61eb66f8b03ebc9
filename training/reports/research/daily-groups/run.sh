#!/usr/bin/env bash
# Issue 19 item 8: does each daily feature group change walk-forward AUC and after-fee Sharpe?
# Development windows only (2022-2023 in two yearly windows of 8760 bars, trained from 2020-09, expanding), the strategy and
# horizon chosen by issue 16's tuning on development data (tuning/best.yaml, 12 bars); one run per
# feature version sharing the backfilled features (--work).  Then the 2024 hold-out once, v1 and v2.
# From the project root, after infra/setup.
set -euo pipefail
D=${DATA:-../shared/data}
FILES="$D/binance-spot-1h/BTC_USDT-1h.parquet $D/binance-spot-1h/ETH_USDT-1h.parquet $D/binance-spot-1h/SOL_USDT-1h.parquet $D/binance-spot-1h/BNB_USDT-1h.parquet $D/binance-spot-1h/XRP_USDT-1h.parquet"
R=${OUT:-var/research-daily}
CFG=training/reports/research/tuning/best.yaml
DAILY="--set daily.source=files --set daily.folder=$D/daily-onchain-sentiment"
py=.venv/bin/python
for F in ${VERSIONS:-v1 v2 v2_fear_greed v2_funding v2_hash_rate v2_difficulty}; do
  nice $py -m training.walkforward $FILES --train-start 2020-09-01 --start 2022-01-01 --end 2024-01-01 --every-bars 8760 \
    --config $CFG --horizon 12 $DAILY --features $F --ensemble-method fixed --work $R/dev-work --out $R/dev-$F || echo "dev $F failed"
done
if [ "${HOLDOUT:-0}" = 1 ]; then  # once, at the end
  for F in v1 v2; do
    nice $py -m training.walkforward $FILES --train-start 2020-09-01 --start 2024-01-01 --end 2025-01-01 --every-bars 8784 \
      --config $CFG --horizon 12 $DAILY --features $F --ensemble-method fixed --work $R/holdout-work --out $R/holdout-$F || echo "holdout $F failed"
  done
fi
$py -m training.daily_groups_report $R --out training/reports/research/daily-groups
