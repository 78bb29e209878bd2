#!/usr/bin/env bash
# The smallest edges over several workloads: bench/federated.sh's "skewed" scenario (8 edges,
# the largest with 300x the viewers of the smallest) at more seeds, trained locally,
# federated and centrally; then their hit@10 taken together.
#
#   bench/federated_seeds.sh [DATE] [SEED ...]     (default seeds 1 2 3 4)
set -euo pipefail
cd "$(dirname "$0")/.."
date=${1:-2025-04-12}
shift $(( $# > 1 ? 1 : $# ))
seeds=("$@")
((${#seeds[@]})) || seeds=(1 2 3 4)
scenarios=()
for seed in "${seeds[@]}"; do
  FED_VARIANTS="central local federated" bench/federated.sh "$date" 7 "skewed-seed$seed" \
    --edge-size-ratio 300 --seed "$seed" >/dev/null
  scenarios+=("skewed-seed$seed")
done
[[ -d bench/results/federated-skewed ]] && scenarios+=(skewed)  # the seed-42 run of bench/federated.sh, if made
.venv/bin/python bench/federated.py --pooled "${scenarios[@]}" | tee bench/results/federated-pooled.md
