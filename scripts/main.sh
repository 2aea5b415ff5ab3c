#!/usr/bin/env bash
# The main job on the embedded default: build the whole benchmark dataset offline and
# print what it holds (configs, splits, counts, an example episode, reference scores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
OUT="${1:-build/interrupt_bench}"
.venv/bin/python -m dataset_builder build --out "$OUT" --summary
