"""The README's main job: build the dataset offline and summarise it, fetch (first run)
or reuse a real pretrained model, run the paired controls of both tiers on it
(``lm_eval --tasks interrupt_bench_controls,interrupt_bench_easy_controls``: every episode
interrupted, without cuts and task by task), print lm-eval's results table and the cost
of interruption of each tier, and write a PNG of both.

    interrupt-bench-eval [--model smollm2-135m-instruct] [--limit 50]

``--model`` is a name from ``interrupt-bench-models list`` (SmolLM2-135M-Instruct
by default; ``reference-small`` is the project's own from-scratch model) or a model
directory. A model with a chat template is evaluated through it with the task's default
demonstrations; one without (Gemma 3 270M) in plain mode. bfloat16 where the hardware
multiplies it natively, float32 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from commands.errors import UsageError
from commands.tiers import TIERS, controls_task
from interrupt_bench.errors import InterruptBenchError
from local_models.hardware import DTYPES


def check_args(args: argparse.Namespace) -> None:
    """Every value checked before any work: lm-eval would take ``--limit 0`` and a
    negative ``--num-fewshot`` and report them as numbers, and an unknown dtype, an
    ``--out`` that is a file or a ``--model`` directory that holds no model would fail
    only after the build or deep in the model load."""
    from local_models.registry import MODELS, get_model, model_dir_problem

    if args.limit < 1:
        raise UsageError(f"--limit is {args.limit}; give 1 or more test episodes per tier")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise UsageError(
            f"--num-fewshot is {args.num_fewshot}; give 0 or more demonstration sessions, "
            "or leave it out for the task's default"
        )
    if args.dtype not in DTYPES:
        raise UsageError(f"--dtype {args.dtype} is not one of {', '.join(DTYPES)}")
    out = Path(args.out)
    for path in (out, out / "interrupt_bench", out / "results"):
        if path.exists() and not path.is_dir():
            raise UsageError(
                f"--out {out}: {path} is a file; pass a directory (created if missing)"
            )
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {parent} is not writable; pick another --out")
    if args.model not in MODELS and not Path(args.model).is_dir():
        get_model(args.model)  # raises the error that lists the known names
    if args.model not in MODELS and (problem := model_dir_problem(args.model)):
        raise UsageError(f"--model {problem}")  # lm-eval would fail on it after the build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="interrupt-bench-eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="build", help="working directory (default %(default)s)")
    parser.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="model name (interrupt-bench-models list) or directory (default %(default)s)",
    )
    parser.add_argument(
        "--limit", type=int, default=50, help="test episodes per tier (default %(default)s)"
    )
    parser.add_argument(
        "--num-fewshot", type=int, help="demonstration sessions (default: the task's default)"
    )
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 where native, else float32")
    parser.add_argument("--batch-size", default="32")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        check_args(args)
    except InterruptBenchError as exc:
        print(f"[main] error: {exc}", file=sys.stderr)
        return 2

    from dataset_builder import build_dataset
    from dataset_builder.summary import summarise
    from interrupt_bench.config import CONFIGS
    from lm_eval_tasks import include_path
    from lm_eval_tasks.figures import plot_paired_costs
    from local_models.hardware import best_dtype, device
    from local_models.registry import ModelError, has_chat_template, model_path

    out = Path(args.out)
    data = out / "interrupt_bench"
    print(f"[main] 1/3 dataset -> {data}", flush=True)
    build_dataset(data, list(CONFIGS.values()))
    print(summarise(data), flush=True)
    print(f"[main] 2/3 model {args.model} (fetched or built once, then cached)", flush=True)
    try:
        model = model_path(args.model)
    except ModelError as exc:
        print(f"[main] error: {exc}", file=sys.stderr)
        return 2
    chat = has_chat_template(str(model))
    dtype = best_dtype() if args.dtype == "auto" else args.dtype
    print(
        f"[main] 3/3 lm_eval: {args.limit} test episodes of each tier, each played "
        "interrupted, without cuts and task by task "
        f"({'chat template' if chat else 'plain mode'}, {dtype})",
        flush=True,
    )
    results = out / "results"
    cmd = [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model},dtype={dtype}",
        "--device",
        device(),
        "--tasks",
        ",".join(map(controls_task, TIERS)),
        "--include_path",
        include_path(),
        "--metadata",
        json.dumps({"dataset_path": str(data.resolve())}),
        *(["--apply_chat_template"] if chat else []),
        *(["--num_fewshot", str(args.num_fewshot)] if args.num_fewshot is not None else []),
        "--batch_size",
        str(args.batch_size),
        "--limit",
        str(args.limit),
        "--log_samples",
        "--output_path",
        str(results),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd)
    if proc.returncode:
        print(f"[main] lm_eval failed with exit code {proc.returncode}", file=sys.stderr)
        return proc.returncode
    newest = max(results.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    table = json.loads(newest.read_text())["results"]
    by_tier = {tier: table[controls_task(tier)] for tier in TIERS}
    for tier, metrics in by_tier.items():
        cost, err = metrics["interruption_cost,strict"], metrics["interruption_cost_stderr,strict"]
        print(
            f"[main] {tier}: accuracy {metrics['accuracy,strict']:.3f} interrupted, "
            f"{metrics['accuracy_nocut,strict']:.3f} without cuts, "
            f"{metrics['accuracy_single,strict']:.3f} alone; cost of interruption "
            f"{cost:+.3f} ± {err:.3f} (paired, {args.limit} episodes)"
        )
    png = plot_paired_costs(
        by_tier,
        out / "interrupt_bench.png",
        f"{args.model}: the cost of interruption ({args.limit} test episodes a tier, {dtype})",
    )
    print(
        f"[main] lm_eval took {time.perf_counter() - start:.0f} s; results and samples in "
        f"{newest.parent}; picture: {png}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
