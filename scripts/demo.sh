#!/usr/bin/env bash
# The main job: train a small stochastic-interpolant model on the checkerboard, evaluate it on the NFE ladder,
# write samples, and say where to look. Everything lands in ./out/demo (MLflow store, checkpoints, samples).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
OUT="$PWD/out/demo"
mkdir -p "$OUT"
export MLFLOW_TRACKING_URI="sqlite:///$OUT/mlflow.db"
export MGM_STUDIES_CHECKPOINTS="$OUT/checkpoints"

"$BIN/mgm-studies" validate configs/checkerboard_si.yaml
RUN_ID=$("$BIN/mgm-studies" train configs/checkerboard_si.yaml --experiment demo | tee /dev/stderr | tail -n 1)
"$BIN/mgm-studies" evaluate "$RUN_ID" --steps 1,2,4,8,16,32
"$BIN/mgm-studies" sample "$RUN_ID" --steps 8 --num-samples 5000 --out "$OUT/samples_nfe-8.parquet"

cat <<MSG

Done. Run id: $RUN_ID
Browse it:  $BIN/mlflow ui --backend-store-uri $MLFLOW_TRACKING_URI --host 127.0.0.1 --port 5000
            then open http://127.0.0.1:5000 (experiment "demo": params, kl/nfe-K, sample plots, checkpoint)
Samples:    $OUT/samples_nfe-8.parquet
MSG
