#!/usr/bin/env bash
# The evaluation tables for the default workload at several Zipf exponents.
#
#   bench/evaluate_alphas.sh [DATE] [HISTORY_DAYS] [ALPHA ...]
#
# For each alpha: generate and validate HISTORY_DAYS days ending at DATE, predict from
# them, then replay DATE+1 against the predictions and the classic policies. Each run's
# report lands in bench/results/evaluation-alpha<ALPHA>/ (report.md, report.json, plot).
set -euo pipefail
cd "$(dirname "$0")/.."
date=${1:-2025-04-12}
history=${2:-3}
shift $(( $# > 2 ? 2 : $# ))
alphas=("$@")
((${#alphas[@]})) || alphas=(0.9 0.7 1.1)
ec=.venv/bin/edgecache

for alpha in "${alphas[@]}"; do
  data=bench/results/data-alpha$alpha
  out=bench/results/evaluation-alpha$alpha
  rm -rf "$data" "$out"
  for back in $(seq $((history - 1)) -1 0); do
    day=$(date -u -d "$date - $back day" +%F)
    $ec generate --date "$day" --data-dir "$data" --alpha "$alpha" >/dev/null
    $ec features --date "$day" --data-dir "$data" --window-days "$history" >/dev/null
  done
  $ec predict --date "$date" --data-dir "$data" >/dev/null
  echo "## alpha $alpha (history $history days, evaluated on the day after $date)"
  $ec evaluate --date "$date" --data-dir "$data" 2>/dev/null | sed -n '/^|/,$p'
  mkdir -p "$out"
  cp -r "$data/evaluation/date=$date/." "$out/"
  rm -rf "$out/traces"
done
