#!/usr/bin/env bash
# The demonstration variants on the validation split (never test), through the real
# lm_eval CLI: each variant is one `fewshot_rule` (interrupt_bench.demonstrations.RULES)
# or a shot count; everything else equal. Writes OUT/MODEL/VARIANT/ (lm-eval's results
# and samples); `benchmarks/demonstration_table.py OUT` prints the table.
# VARIANTS (space-separated RULE[:SHOTS]) picks a subset.
#   bash benchmarks/demonstration_variants.sh MODEL_DIR chat|plain OUT [LIMIT]
set -euo pipefail
cd "$(dirname "$0")/.."
model="$1" mode="$2" out="$3" limit="${4:-60}"
name="$(basename "$model")"
chat=(); [ "$mode" = chat ] && chat=(--apply_chat_template)
dtype="$(.venv/bin/python -c 'from local_models.hardware import best_dtype; print(best_dtype())')"
for variant in ${VARIANTS:-visible_cut next_turn closing resume_and_close resume_and_close:2}; do
  rule="${variant%%:*}" shots=1
  [ "$variant" != "$rule" ] && shots="${variant##*:}"
  dir="$out/$name-$mode/${rule}-${shots}shot"
  [ -f "$dir/done" ] && continue
  mkdir -p "$(dirname "$dir")"
  echo "[variants] $name $mode: fewshot_rule $rule, $shots shot(s), $limit validation episodes"
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/lm_eval --model hf \
    --model_args "pretrained=$model,dtype=$dtype" --device cpu \
    --tasks interrupt_bench_easy_controls_validation --include_path lm_eval_tasks \
    "${chat[@]}" --num_fewshot "$shots" --limit "$limit" --batch_size 32 \
    --metadata "{\"dataset_path\": \"build/interrupt_bench\", \"fewshot_rule\": \"$rule\"}" \
    --log_samples --output_path "$dir" > "$dir.log" 2>&1 || { tail -5 "$dir.log"; exit 1; }
  touch "$dir/done"
  grep -E "accuracy |resumption|overwrite|reattempt_rate" "$dir.log" | head -12
done
