#!/usr/bin/env bash
# The evaluation tables for the default workload at several Zipf exponents, for the
# learned model and the simple baseline on the same day.
#
#   bench/evaluate_alphas.sh [DATE] [WINDOW_DAYS] [ALPHA ...]
#
# For each alpha: generate DATE and the WINDOW_DAYS days before it (the feature window
# and the training day), validate them and build the features of DATE and DATE-1; then,
# for each model (learned, simple), predict DATE+1 and replay DATE+1's requests against
# the predictions and the classic policies. Each report lands in
# bench/results/evaluation-alpha<ALPHA>-<MODEL>/ (report.md, report.json, plot), and a
# side-by-side summary in bench/results/models.md.
set -euo pipefail
cd "$(dirname "$0")/.."
date=${1:-2025-04-12}
window=${2:-7}
shift $(( $# > 2 ? 2 : $# ))
alphas=("$@")
((${#alphas[@]})) || alphas=(0.7 0.9 1.1)
ec=.venv/bin/edgecache
mkdir -p bench/results

for alpha in "${alphas[@]}"; do
  data=bench/results/data-alpha$alpha
  rm -rf "$data"
  $ec generate --date "$date" --data-dir "$data" --alpha "$alpha" --history-days $((window + 1)) >/dev/null
  $ec features --date "$date" --data-dir "$data" --window-days "$window" >/dev/null
  for model in learned simple; do
    out=bench/results/evaluation-alpha$alpha-$model
    rm -rf "$out"
    $ec predict --date "$date" --data-dir "$data" --model "$model" >/dev/null
    echo "## alpha $alpha, $model model (window $window days, evaluated on the day after $date)"
    $ec evaluate --date "$date" --data-dir "$data" 2>/dev/null | sed -n '/^|/,$p'
    mkdir -p "$out"
    cp -r "$data/evaluation/date=$date/." "$out/"
    cp "$data/predictions/date=$date/summary.json" "$out/predict_summary.json"
    rm -rf "$out/traces"
  done
done
.venv/bin/python bench/models.py "${alphas[@]}" | tee bench/results/models.md
