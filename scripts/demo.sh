#!/usr/bin/env bash
# The main job: a small study end to end. search_spaces/demo.yaml trains an si teacher once, then distils it with
# ITVM under each of the three intermediate-time strategies (two seeds each) as Ray Tune trials on a local Ray,
# tracked in MLflow (one parent run, one child per trial), and writes the study's ablation report to
# out/demo/report/. Everything lands in ./out/demo: a fresh clone's tracked files stay as they are (the committed
# example, reports/demo_itvm_intermediate_time/, is rebuilt on purpose with `mgm-studies report` run from out/demo).
# Re-running it resumes (and, once finished, only reprints) the same sweep, and rewrites the report.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
OUT="$PWD/out/demo"
mkdir -p "$OUT"
export MLFLOW_TRACKING_URI="sqlite:///$OUT/mlflow.db"
export MGM_STUDIES_CHECKPOINTS="$OUT/checkpoints"

"$BIN/mgm-studies" validate search_spaces/demo.yaml
"$BIN/mgm-studies" sweep search_spaces/demo.yaml --resume --storage "$OUT/ray_results" --quiet
"$BIN/mgm-studies" report demo_itvm_intermediate_time --out "$OUT/report"

cat <<MSG

Browse the study:  $BIN/mlflow ui --backend-store-uri $MLFLOW_TRACKING_URI --host 127.0.0.1 --port 5000
                   then open http://127.0.0.1:5000, experiment "demo_itvm_intermediate_time": the sweep's parent
                   run and its six trials (params, kl/nfe-K per evaluation, loss curves, sample plots, final models)
The report:        $OUT/report/index.html (also report.md, results.parquet, figures/); the committed one
                   from the same study: reports/demo_itvm_intermediate_time/
Ray Tune's files:  $OUT/ray_results
MSG
