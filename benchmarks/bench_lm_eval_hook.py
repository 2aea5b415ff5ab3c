"""What the generic lm-eval hook costs (the path of every backend but ``hf``, here forced
with ``turn_batching: shared``), on a tiny Llama on the CPU, one run, side by side:

  (a) the harness: ``lm.interrupt_session`` replaying N episodes turn-synchronously;
  (b) the floor: the same turn requests sent straight to ``model.generate`` in the same
      batches (same prompts, same max_new_tokens, same batch size);
  (c) per-episode sequential replay: the harness called with one episode at a time.

Goals (issue 3): a/b <= 1.15, c/a >= 4 at 32 episodes.

    .venv/bin/python benchmarks/bench_lm_eval_hook.py [--episodes 32] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from lm_eval_tasks import include_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden-size", type=int, default=64)
    args = parser.parse_args()

    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from dataset_builder import build_dataset
    from interrupt_bench.config import get_config
    from local_models.tiny_model import build_tiny_llama

    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="bench-hook-"))
    model_dir = build_tiny_llama(tmp / "model", hidden_size=args.hidden_size, layers=2, heads=4)
    build_dataset(
        tmp / "ds",
        [get_config("default")],
        splits=["test"],
        sizes={"test": args.episodes},
        progress=False,
    )
    lm = HFLM(pretrained=str(model_dir), batch_size=args.batch_size, device="cpu", dtype="float32")
    manager = TaskManager(
        include_path=include_path(),
        include_defaults=False,
        # The generic hook through generate_until (``auto`` would take the session engine
        # on an hf model; bench_real_model.py measures that).
        metadata={"dataset_path": str(tmp / "ds"), "turn_batching": "shared"},
    )
    task = manager.load(["interrupt_bench"])["tasks"]["interrupt_bench"]
    task.build_all_requests(
        limit=args.episodes,
        apply_chat_template=True,
        chat_template=lm.apply_chat_template,
        tokenizer_name=lm.tokenizer_name,
    )
    instances = list(task.instances)

    # Warm up kernels and caches once, so no contender pays for a cold start.
    warm = lm.tokenizer(["warm up"], return_tensors="pt")
    with torch.inference_mode():
        lm.model.generate(
            **warm, max_new_tokens=8, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id
        )

    calls: list[list] = []
    inside = [0.0]  # seconds spent inside lm-eval's generate_until
    generate_until = lm.generate_until

    def recording(requests, disable_tqdm=True):
        calls.append([r.args for r in requests])
        begin = time.perf_counter()
        out = generate_until(requests, disable_tqdm=True)
        inside[0] += time.perf_counter() - begin
        return out

    lm.generate_until = recording
    start = time.perf_counter()
    lm.interrupt_session(instances)
    harness = time.perf_counter() - start
    recorded = list(calls)
    inside_harness = inside[0]
    hook_overhead = harness - inside_harness

    model, tokenizer = lm.model, lm.tokenizer
    tokenizer.padding_side = "left"
    start = time.perf_counter()
    for call in recorded:
        groups: dict[int, list[str]] = {}
        for prompt, gen_kwargs in call:
            groups.setdefault(gen_kwargs["max_gen_toks"], []).append(prompt)
        for max_new, group in groups.items():
            for i in range(0, len(group), args.batch_size):
                batch = tokenizer(
                    group[i : i + args.batch_size],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                )
                with torch.inference_mode():
                    model.generate(
                        **batch,
                        max_new_tokens=max_new,
                        do_sample=False,
                        pad_token_id=tokenizer.pad_token_id,
                    )
    floor = time.perf_counter() - start

    start = time.perf_counter()
    for instance in instances:
        lm.interrupt_session([instance])
    sequential = time.perf_counter() - start

    turns = sum(len(c) for c in recorded)
    print(
        f"episodes {args.episodes}, generate_until calls {len(recorded)}, turn requests {turns}, "
        f"batch size {args.batch_size}, torch threads {torch.get_num_threads()}"
    )
    print(f"(a) harness (turn-synchronous hook)  {harness:8.2f} s")
    print(f"(b) floor (model.generate, same batches) {floor:6.2f} s")
    print(f"(c) per-episode sequential replay    {sequential:8.2f} s")
    print(
        f"    of which the hook itself (prompts, cutting, scoring records) {hook_overhead:.2f} s "
        f"({100 * hook_overhead / harness:.1f}%), "
        f"lm-eval's HFLM.generate_until {inside_harness:.2f} s"
    )
    print(f"a/b = {harness / floor:.2f}  (goal <= 1.15)")
    print(f"c/a = {sequential / harness:.2f}  (goal >= 4)")


if __name__ == "__main__":
    sys.exit(main())
