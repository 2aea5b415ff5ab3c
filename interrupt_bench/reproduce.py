"""Regenerate the seed paper's tables and figure, one command each, with lm-eval's Python
API (pass Hugging Face model ids on a GPU, or the reference models here):

    python -m interrupt_bench.reproduce table1 --model MODEL [--limit N]
    python -m interrupt_bench.reproduce table2 --model A --model B [--limit N]
    python -m interrupt_bench.reproduce table2 --model BASE --model pretrained=BASE,peft=ADAPTER
    python -m interrupt_bench.reproduce figure1 --log OUTPUT_DIR/train_log.jsonl

Table 1: one model over the config grid (tasks × budget interval); Table 2: several
models on the default config; Figure 1: the curves of a training run. Each writes a
markdown table (numbers exactly as lm-eval reported them, with stderr), the raw results
as JSON, and a PNG, under ``--out``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from interrupt_bench.config import GRID_INTERVALS, GRID_TASKS, grid_config_name

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("accuracy", "reattempts", "answer_rate", "resumption_rate", "format_rate")


def model_args(model: str) -> str:
    """``--model`` is a model id or directory, or lm-eval model args (``pretrained=…,peft=…``)
    to evaluate a LoRA adapter on its base model."""
    if "=" not in model:
        return f"pretrained={model},dtype=auto"
    return model if "dtype=" in model else f"{model},dtype=auto"


def label(model: str) -> str:
    """A short name for a table row: the adapter's directory if there is one."""
    args = dict(part.split("=", 1) for part in model.split(",")) if "=" in model else {}
    path = args.get("peft") or args.get("pretrained") or model
    return Path(path).name + (" + LoRA" if "peft" in args else "")


def evaluate(
    model: str, tasks: list[str], dataset: Path, limit: int | None, batch_size: str
) -> dict:
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(
        include_path=str(ROOT / "lm_eval_tasks"),
        include_defaults=False,
        metadata={"dataset_path": str(dataset)},
    )
    result = simple_evaluate(
        model="hf",
        model_args=model_args(model),
        tasks=tasks,
        task_manager=manager,
        limit=limit,
        batch_size=batch_size,
        apply_chat_template=True,
        device="cuda" if torch.cuda.is_available() else "cpu",
    )
    return result["results"]


def cell(results: dict, task: str, metric: str) -> str:
    value, stderr = results[task][f"{metric},none"], results[task].get(f"{metric}_stderr,none")
    return f"{value:.3f} ± {stderr:.3f}" if isinstance(stderr, float) else f"{value:.3f}"


def _ensure_dataset(path: Path) -> Path:
    if not (path / "build_info.json").exists():
        from dataset_builder import build_dataset
        from interrupt_bench.config import CONFIGS

        build_dataset(path, list(CONFIGS.values()))
    return path


def table1(model: str, dataset: Path, out: Path, limit: int | None, batch_size: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = {
        (n, lo, hi): f"interrupt_bench_{grid_config_name(n, lo, hi)}"
        for n in GRID_TASKS
        for lo, hi in GRID_INTERVALS
    }
    results = evaluate(model, list(tasks.values()), dataset, limit, batch_size)
    (out / "table1.json").write_text(json.dumps(results, indent=2, default=str))
    lines = [
        f"Table 1: {label(model)} over the config grid ({limit or 'all'} test episodes per config)",
        "",
    ]
    for metric in ("accuracy", "reattempts"):
        lines += [
            f"**{metric}**",
            "",
            "| tasks | " + " | ".join(f"budgets {lo}–{hi}" for lo, hi in GRID_INTERVALS) + " |",
            "|---|" + "---|" * len(GRID_INTERVALS),
        ]
        for n in GRID_TASKS:
            lines.append(
                f"| {n} | "
                + " | ".join(cell(results, tasks[(n, lo, hi)], metric) for lo, hi in GRID_INTERVALS)
                + " |"
            )
        lines.append("")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("accuracy", "reattempts")):
        for i, n in enumerate(GRID_TASKS):
            values = [results[tasks[(n, lo, hi)]][f"{metric},none"] for lo, hi in GRID_INTERVALS]
            ax.bar(
                [j + 0.25 * (i - 1) for j in range(len(GRID_INTERVALS))],
                values,
                width=0.25,
                label=f"{n} tasks",
            )
        ax.set_xticks(range(len(GRID_INTERVALS)), [f"{lo}–{hi}" for lo, hi in GRID_INTERVALS])
        ax.set_xlabel("budget interval (tokens)")
        ax.set_title(metric)
        ax.legend(fontsize=8)
    fig.suptitle(f"Table 1: {label(model)}")
    fig.tight_layout()
    fig.savefig(out / "table1.png", dpi=110)
    plt.close(fig)
    return _write(out / "table1.md", lines)


def table2(models: list[str], dataset: Path, out: Path, limit: int | None, batch_size: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {m: evaluate(m, ["interrupt_bench"], dataset, limit, batch_size) for m in models}
    (out / "table2.json").write_text(json.dumps(results, indent=2, default=str))
    lines = [
        f"Table 2: models on the default config ({limit or 'all'} test episodes)",
        "",
        "| model | " + " | ".join(METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for m in models:
        lines.append(
            f"| {label(m)} | "
            + " | ".join(cell(results[m], "interrupt_bench", k) for k in METRICS)
            + " |"
        )
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, m in enumerate(models):
        values = [results[m]["interrupt_bench"][f"{k},none"] for k in METRICS]
        ax.bar(
            [j + i / (len(models) + 1) for j in range(len(METRICS))],
            values,
            width=1 / (len(models) + 1),
            label=label(m),
        )
    ax.set_xticks(range(len(METRICS)), METRICS, fontsize=8)
    ax.legend(fontsize=8)
    ax.set_title("Table 2: default config")
    fig.tight_layout()
    fig.savefig(out / "table2.png", dpi=110)
    plt.close(fig)
    return _write(out / "table2.md", lines)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines).rstrip() + "\n")
    print(path.read_text())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m interrupt_bench.reproduce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", choices=("table1", "table2", "figure1"))
    parser.add_argument(
        "--model", action="append", default=[], help="model id or directory (table2: repeat)"
    )
    parser.add_argument("--log", help="figure1: a train_log.jsonl from training/reinforce.py")
    parser.add_argument("--dataset-path", default="build/interrupt_bench", help="built if missing")
    parser.add_argument("--limit", type=int, help="test episodes per task (default: all)")
    parser.add_argument("--batch-size", default="64")
    parser.add_argument("--out", default="build/reproduce")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.what == "figure1":
        if not args.log:
            parser.error("figure1 needs --log OUTPUT_DIR/train_log.jsonl")
        sys.path.insert(0, str(ROOT))
        from training.report import plot_curves

        print(
            plot_curves(
                Path(args.log), out / "figure1.png", "Figure 1: REINFORCE on interrupt-bench"
            )
        )
        return 0
    if not args.model:
        parser.error(f"{args.what} needs --model")
    dataset = _ensure_dataset(Path(args.dataset_path))
    if args.what == "table1":
        table1(args.model[0], dataset, out, args.limit, args.batch_size)
    else:
        table2(args.model, dataset, out, args.limit, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
