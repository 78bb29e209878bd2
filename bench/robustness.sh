#!/usr/bin/env bash
# The robustness matrix: every workload shape through the nightly pipeline, then one table.
#
#   bench/robustness.sh [SHAPE ...]
#
# For each shape: generate DATE and the days before it, build the features, predict (the
# model gate picks what is deployed) and replay DATE+1 against the predictions and the
# classic policies at 1, 2, 5, 10 and 20 % of the catalog. Data and reports land in
# bench/results/robustness/<shape>/; a shape whose evaluation exists is not run again
# (FRESH=1 runs it anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
date=${DATE:-2025-04-12}
window=${WINDOW_DAYS:-3}
ec=.venv/bin/edgecache
out=bench/results/robustness

declare -A SHAPES=(
  [alpha0.7]="--alpha 0.7"
  [alpha0.9]="--alpha 0.9"
  [alpha1.1]="--alpha 1.1"
  [snm]="--workload snm --titles 5000 --series-share 0"
  [movies-only]="--series-share 0"
  [no-regions]="--regional-skew 0"
  [high-churn]="--releases-per-day 2 --titles 5000"
  [one-edge]="--edges 1"
  [tiny-edge]="--edge-size-ratio 500"
)
ORDER=(alpha0.7 alpha0.9 alpha1.1 snm movies-only no-regions high-churn one-edge tiny-edge)
(($#)) && ORDER=("$@")

mkdir -p "$out"
for shape in "${ORDER[@]}"; do
  flags=${SHAPES[$shape]:?unknown shape $shape}
  data=$out/$shape
  if [[ -f $data/evaluation/date=$date/report.json && -z ${FRESH:-} ]]; then
    echo "== $shape: evaluated already"
    continue
  fi
  echo "== $shape: $flags"
  rm -rf "$data"
  # shellcheck disable=SC2086  # the flags are words
  $ec generate --date "$date" --data-dir "$data" --history-days $((window + 1)) $flags >/dev/null
  $ec features --date "$date" --data-dir "$data" --window-days "$window" >/dev/null
  $ec predict --date "$date" --data-dir "$data" >/dev/null
  $ec evaluate --date "$date" --data-dir "$data" >/dev/null
  rm -rf "$data/evaluation/date=$date/traces"
  echo "$flags" > "$data/flags"
done
ls "$out"/*/evaluation/date="$date"/report.md
