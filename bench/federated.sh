#!/usr/bin/env bash
# Federated against central and local-only training, and the price of differential privacy.
#
#   bench/federated.sh [DATE] [WINDOW_DAYS] [SCENARIO [GENERATE-FLAGS...]]
#
# SCENARIO names the results (default "default": the default workload, 8 edges, the
# largest with 10x the viewers of the smallest); GENERATE-FLAGS change the workload, e.g.
#   bench/federated.sh 2025-04-12 7 skewed --edge-size-ratio 300
# FED_VARIANTS="central local federated" runs only those ways of training.
# Generates DATE and the days before it, builds the features once, then for each way of
# training predicts DATE+1 and replays DATE+1's requests (edgecache evaluate). Each
# report lands in bench/results/federated-<SCENARIO>/<VARIANT>/; bench/federated.py
# prints the tables (bench/results/federated-<SCENARIO>.md).
set -euo pipefail
cd "$(dirname "$0")/.."
date=${1:-2025-04-12}
window=${2:-7}
scenario=${3:-default}
shift $(( $# > 3 ? 3 : $# ))
ec=.venv/bin/edgecache
results=bench/results/federated-$scenario
data=bench/results/data-federated-$scenario
rm -rf "$data" "$results"
$ec generate --date "$date" --data-dir "$data" --history-days $((window + 1)) "$@" >/dev/null
$ec features --date "$date" --data-dir "$data" --window-days "$window" >/dev/null

run() {  # VARIANT PREDICT-FLAGS...
  local variant=$1 out=$results/$1
  shift
  [[ -z ${FED_VARIANTS:-} || " $FED_VARIANTS " == *" $variant "* ]] || return 0
  echo "== $scenario / $variant: $*" >&2
  $ec predict --date "$date" --data-dir "$data" "$@" >/dev/null
  $ec evaluate --date "$date" --data-dir "$data" >/dev/null
  mkdir -p "$out"
  cp "$data/evaluation/date=$date/report.json" "$out/"
  cp "$data/predictions/date=$date/summary.json" "$out/predict_summary.json"
}

run central --training central
run local --training local
run federated --training federated
run federated-secure --training federated --fl-secure true
run federated-finetune --training federated --fl-fine-tune-steps 1
run federated-half --training federated --fl-fraction 0.5 --fl-rounds 16
for eps in 8 4 1; do
  run "dp-eps$eps" --training federated --fl-epsilon "$eps"
done
for clip in 0.25 4; do  # the clip bound trades bias (small) against noise (large)
  run "dp-eps4-clip$clip" --training federated --fl-epsilon 4 --fl-clip-norm "$clip"
done
.venv/bin/python bench/federated.py "$scenario" | tee "$results.md"
