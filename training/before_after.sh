#!/usr/bin/env bash
# A base model and (optionally) its REINFORCE adapter through the real lm_eval CLI, on the
# test split of the paired controls of three configs: the easy training config
# (easy_tasks5_budget0to50), `easy` (other budgets) and `default` (another tier). The chat
# template where the model has one (a plain transcript where not: a base model), the
# task's default demonstrations, the dtype the machine computes fastest.
# One lm_eval run per model and task, in OUT/{base,adapter}/TASK/ (lm-eval's results and
# samples, TASK.log beside it); a finished one is kept, so an interrupted call resumes.
# SPLIT=validation runs the training config's validation split alone, for choosing a
# checkpoint without the test split.
#   bash training/before_after.sh BASE_DIR OUT [LIMIT] [ADAPTER_DIR]
#   SPLIT=validation bash training/before_after.sh BASE_DIR OUT 100 CHECKPOINT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
base="$1" out="$2" limit="${3:-200}" adapter="${4:-}" split="${SPLIT:-test}"
dtype="$(.venv/bin/python -c 'from local_models.hardware import best_dtype; print(best_dtype())')"
chat=(--apply_chat_template)
.venv/bin/python -c 'import sys; from local_models.registry import has_chat_template as h; sys.exit(not h(sys.argv[1]))' "$base" || chat=()
case "$split" in
  test) tasks=(interrupt_bench_easy_tasks5_budget0to50_controls interrupt_bench_easy_controls interrupt_bench_controls) ;;
  validation) tasks=(interrupt_bench_easy_tasks5_budget0to50_controls_validation) ;;
  *) echo "[before_after] SPLIT=$split: use test or validation" >&2; exit 2 ;;
esac
run() {  # NAME MODEL_ARGS TASK
  local dir="$out/$1/$3"
  [ -f "$dir/done" ] && return 0
  rm -rf "$dir" && mkdir -p "$dir"
  echo "[before_after] $1 on $3: $2, $limit $split episodes"
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/lm_eval --model hf --model_args "$2" \
    --device cpu --tasks "$3" --include_path lm_eval_tasks "${chat[@]}" \
    --limit "$limit" --batch_size 32 --metadata '{"dataset_path": "build/interrupt_bench"}' \
    --log_samples --output_path "$dir" > "$dir.log" 2>&1 || { tail -5 "$dir.log"; exit 1; }
  touch "$dir/done"
  grep -E "^\|" "$dir.log" | head -60
}
for task in "${tasks[@]}"; do
  run base "pretrained=$base,dtype=$dtype" "$task"
  [ -n "$adapter" ] && run adapter "pretrained=$base,peft=$adapter,dtype=$dtype" "$task"
done
exit 0
