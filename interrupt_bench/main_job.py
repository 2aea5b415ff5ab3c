"""The README's main job: build the dataset offline and summarise it, build (or reuse)
the smaller reference model, run ``lm_eval --tasks interrupt_bench`` on it, print lm-eval's results
table and write a PNG of accuracy and re-attempts by turn budget and by family.

    python -m interrupt_bench.main_job [--out build] [--size small] [--limit 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m interrupt_bench.main_job",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="build", help="working directory (default %(default)s)")
    parser.add_argument(
        "--size", default="small", help="reference model size (default %(default)s)"
    )
    parser.add_argument(
        "--model", help="evaluate this model directory instead of a reference model"
    )
    parser.add_argument(
        "--limit", type=int, default=200, help="test episodes (default %(default)s)"
    )
    parser.add_argument("--batch-size", default="64")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    from dataset_builder import build_dataset
    from dataset_builder.summary import summarise
    from interrupt_bench.config import CONFIGS
    from interrupt_bench.figures import plot_by_budget_and_family
    from interrupt_bench.reference_models import reference_model

    out = Path(args.out)
    data = out / "interrupt_bench"
    print(f"[main] 1/3 dataset -> {data}", flush=True)
    build_dataset(data, list(CONFIGS.values()))
    print(summarise(data), flush=True)
    print(
        f"[main] 2/3 model ({args.model or 'reference model ' + args.size}; "
        "built once, then cached)",
        flush=True,
    )
    model = Path(args.model) if args.model else reference_model(args.size)
    print(f"[main] 3/3 lm_eval on {args.limit} test episodes of interrupt_bench", flush=True)
    results = out / "results"
    cmd = [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model},dtype=float32",
        "--tasks",
        "interrupt_bench",
        "--include_path",
        str(ROOT / "lm_eval_tasks"),
        "--metadata",
        json.dumps({"dataset_path": str(data.resolve())}),
        "--apply_chat_template",
        "--batch_size",
        str(args.batch_size),
        "--limit",
        str(args.limit),
        "--log_samples",
        "--output_path",
        str(results),
    ]
    proc = subprocess.run(cmd, cwd=ROOT)
    if proc.returncode:
        print(f"[main] lm_eval failed with exit code {proc.returncode}", file=sys.stderr)
        return proc.returncode
    samples = max(results.rglob("samples_interrupt_bench_*.jsonl"), key=lambda p: p.stat().st_mtime)
    png = plot_by_budget_and_family(
        samples,
        out / "interrupt_bench.png",
        f"{model.name} on interrupt_bench ({args.limit} test episodes)",
    )
    print(f"[main] results and samples in {samples.parent}; picture: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
