"""Regenerate the seed paper's tables and figure, one command each, with lm-eval's Python
API (pass Hugging Face model ids on a GPU, or the reference models here):

    interrupt-bench-reproduce table1 --model MODEL [--tier easy] [--limit N]
    interrupt-bench-reproduce table2 --model A --model B [--tier easy] [--limit N]
    interrupt-bench-reproduce table2 --model BASE --model pretrained=BASE,peft=ADAPTER
    interrupt-bench-reproduce fewshot --model smollm2-135m-instruct --limit 64
    interrupt-bench-reproduce figure1 --log OUTPUT_DIR/train_log.jsonl

Table 1: one model over a tier's config grid (tasks × budget interval); Table 2: several
models on a tier's main config; both through the paired controls, so every row carries its
cost of interruption with a paired stderr. Figure 1: the curves of a training run. Each writes a
markdown table (numbers exactly as lm-eval reported them, with stderr), the raw results
as JSON, and a PNG, under ``--out``. ``--resume`` keeps a saved row only when everything
that defines it matches: the model args (dtype and adapter path included), a stamp of the
weights' files, shots, chat, placement, the task, the dataset's build record and the limit.
Bad arguments are refused in one line before the dataset build or any model load.

This module is the command line; ``model_spec.py`` parses and checks ``--model``,
``tables.py`` writes the tables (through ``lm_eval_runs.py``, ``resume.py``, ``charts.py``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from commands.errors import UsageError
from commands.lm_eval_runs import ensure_dataset
from commands.model_spec import (
    check_distinct,
    check_model_text,
    check_reachable,
    fewshot_specs,
    parse_model,
    split_model_args,
)
from commands.tables import table1, table2
from commands.tiers import TIERS, controls_task
from interrupt_bench.errors import InterruptBenchError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="interrupt-bench-reproduce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", choices=("table1", "table2", "fewshot", "figure1"))
    parser.add_argument(
        "--model", action="append", default=[], help="model id or directory (table2: repeat)"
    )
    parser.add_argument(
        "--tier", choices=tuple(TIERS), default="default", help="table1/table2: the tier"
    )
    parser.add_argument("--log", help="figure1: a train_log.jsonl from training/reinforce.py")
    parser.add_argument("--dataset-path", default="build/interrupt_bench", help="built if missing")
    parser.add_argument("--limit", type=int, help="test episodes per task (default: all)")
    parser.add_argument("--batch-size", default="64")
    parser.add_argument("--out", default="build/reproduce")
    parser.add_argument(
        "--resume", action="store_true", help="keep the rows or configs an earlier run finished"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        return _run(args)
    except InterruptBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _check_out(out: Path) -> None:
    """``--out`` must be a directory we can write: refused here, not after a model ran."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a directory (created if missing)")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {parent} is not a writable directory; pick another --out")


def _run(args: argparse.Namespace) -> int:
    """The command after argparse: every value checked before the dataset build or any
    model load, then the table or figure."""
    out = Path(args.out)
    _check_out(out)
    if args.limit is not None and args.limit < 1:
        raise UsageError(
            f"--limit is {args.limit}; give 1 or more episodes, or leave it out for all of them"
        )
    if args.what == "figure1":
        if not args.log:
            raise UsageError("figure1 needs --log OUTPUT_DIR/train_log.jsonl")
        log = Path(args.log)
        if log.is_dir():
            raise UsageError(
                f"--log {log} is a directory; pass the run's log file, {log / 'train_log.jsonl'}"
            )
        if not log.is_file():
            raise UsageError(
                f"--log {log}: no such file; pass the train_log.jsonl that "
                "interrupt-bench-train wrote into its --output_dir"
            )
        from training.report import plot_curves, read_log

        if not read_log(log):  # every line checked before anything is written
            raise UsageError(
                f"--log {log} holds no training steps; pass the train_log.jsonl of a run "
                "that took at least one step"
            )
        out.mkdir(parents=True, exist_ok=True)
        print(plot_curves(log, out / "figure1.png", "Figure 1: REINFORCE on interrupt-bench"))
        return 0
    if not args.model:
        raise UsageError(f"{args.what} needs --model (a name, directory or Hub id)")
    if args.what in ("table1", "fewshot") and len(args.model) > 1:
        raise UsageError(
            f"{args.what} takes one --model, got {len(args.model)}; compare several with table2"
        )
    for text in args.model:  # every --model's text first, then what it names
        check_model_text(text)
    if args.what == "fewshot":
        fixed = sorted(set(split_model_args(args.model[0])) & {"num_fewshot", "placement"})
        if fixed:
            raise UsageError(
                f"fewshot sets {' and '.join(fixed)} itself (0-3 shots, both "
                f"placements); drop it from --model {args.model[0]!r}"
            )
    for text in args.model:
        check_reachable(text)
    if args.what == "fewshot":
        specs = fewshot_specs(args.model[0])
    else:
        specs = [parse_model(m) for m in args.model]
    check_distinct(specs)
    out.mkdir(parents=True, exist_ok=True)
    dataset = ensure_dataset(Path(args.dataset_path))
    if args.what == "table1":
        table1(specs[0], dataset, out, args.limit, args.batch_size, args.resume, args.tier)
    elif args.what == "fewshot":
        table2(specs, dataset, out, args.limit, args.batch_size, "interrupt_bench_validation",
               "fewshot", args.resume)  # fmt: skip
    else:
        name = "table2" if args.tier == "default" else f"table2-{args.tier}"
        table2(specs, dataset, out, args.limit, args.batch_size, controls_task(args.tier), name,
               args.resume)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
