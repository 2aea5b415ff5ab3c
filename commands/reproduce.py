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
as JSON, and a PNG, under ``--out``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from interrupt_bench.config import EASY_GRID_TASKS, GRID_INTERVALS, GRID_TASKS, grid_config_name
from lm_eval_tasks import include_path

METRICS = ("accuracy", "reattempts", "answer_rate", "resumption_rate", "format_rate")
# What the paired controls' rows show: the three conditions, the two costs, the rest.
PAIRED_METRICS = ("accuracy", "accuracy_nocut", "accuracy_single", "interruption_cost",
                  "interleaving_cost", "answer_rate", "resumption_rate")  # fmt: skip
# tier -> (its grid's task counts, its main config's paired controls task)
TIERS = {
    "default": (GRID_TASKS, "interrupt_bench_controls"),
    "easy": (EASY_GRID_TASKS, "interrupt_bench_easy_controls"),
}
FILTERS = ("strict", "flexible")
OUR_KEYS = ("num_fewshot", "chat", "placement")  # read here, not passed to lm-eval's model


@dataclass(frozen=True)
class ModelSpec:
    """One row: a model (registry name, directory or Hub id; ``peft=`` for an adapter) and
    how it takes the benchmark (shots, chat template or plain)."""

    model_args: str
    name: str
    num_fewshot: int | None = None  # None: the task's default
    chat: bool = True
    placement: str | None = None  # demonstrations: turns / system (None: lm-eval's default)

    @property
    def label(self) -> str:
        shots = "" if self.num_fewshot is None else f", {self.num_fewshot}-shot"
        mode = "" if self.chat else ", plain"
        where = f", demos in {self.placement}" if self.placement and self.num_fewshot else ""
        return f"{self.name}{shots}{mode}{where}"


def parse_model(text: str) -> ModelSpec:
    """``--model`` is a model name (``interrupt-bench-models list``), directory
    or Hub id, optionally followed by lm-eval model args and our own keys, for example
    ``smollm2-135m-instruct,num_fewshot=0``, ``gemma-3-270m,chat=false`` or
    ``pretrained=DIR,peft=ADAPTER``. ``dtype`` defaults to bfloat16 where the hardware
    has it, float32 otherwise."""
    from local_models.hardware import best_dtype
    from local_models.registry import MODELS, has_chat_template, model_path

    parts = text.split(",")
    if "=" not in parts[0]:
        parts[0] = f"pretrained={parts[0]}"
    args = dict(part.split("=", 1) for part in parts)
    ours = {k: args.pop(k) for k in OUR_KEYS if k in args}
    given = args["pretrained"]
    if given in MODELS or Path(given).is_dir():
        args["pretrained"] = str(model_path(given))
    args.setdefault("dtype", best_dtype())
    chat = ours.get("chat")
    if chat is None:
        chat_ok = has_chat_template(args["pretrained"])
    else:
        chat_ok = chat.lower() in ("1", "true", "yes")
    name = Path(args.get("peft") or given).name + (" + LoRA" if "peft" in args else "")
    return ModelSpec(
        model_args=",".join(f"{k}={v}" for k, v in args.items()),
        name=name,
        num_fewshot=int(ours["num_fewshot"]) if "num_fewshot" in ours else None,
        chat=chat_ok,
        placement=ours.get("placement"),
    )


def run_lm_eval(
    spec: ModelSpec,
    tasks: list[str],
    dataset: Path,
    limit: int | None,
    batch_size: str,
    samples: Path | None = None,
) -> dict:
    """lm-eval's results for ``tasks``; with ``samples``, the logged samples go there."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from local_models.hardware import device

    metadata = {"dataset_path": str(dataset)}
    if spec.placement:
        metadata["fewshot_placement"] = spec.placement
    manager = TaskManager(include_path=include_path(), include_defaults=False, metadata=metadata)
    result = simple_evaluate(
        model="hf",
        model_args=spec.model_args,
        tasks=tasks,
        task_manager=manager,
        limit=limit,
        batch_size=batch_size,
        num_fewshot=spec.num_fewshot,
        apply_chat_template=spec.chat,
        fewshot_as_multiturn=spec.chat,
        device=device(),
        log_samples=samples is not None,
    )
    if samples is not None:
        samples.parent.mkdir(parents=True, exist_ok=True)
        with samples.open("w") as sink:
            for task, rows in result["samples"].items():
                for row in rows:
                    sink.write(json.dumps({"task": task, **row}, default=str) + "\n")
    results = result["results"]
    for task, shots in result.get("n-shot", {}).items():
        if task in results:
            results[task]["n-shot"] = shots
    return results


def cell(results: dict, task: str, metric: str, filt: str = "strict") -> str:
    value, stderr = results[task][f"{metric},{filt}"], results[task].get(f"{metric}_stderr,{filt}")
    return f"{value:.3f} ± {stderr:.3f}" if isinstance(stderr, float) else f"{value:.3f}"


def _ensure_dataset(path: Path) -> Path:
    if not (path / "build_info.json").exists():
        from dataset_builder import build_dataset
        from interrupt_bench.config import CONFIGS

        build_dataset(path, list(CONFIGS.values()))
    return path


def _bars(ax, groups: list[str], series: dict[str, list[float]]) -> None:
    width = 1 / (len(series) + 1)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))], values,
               width=width, label=name)  # fmt: skip
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.legend(fontsize=7)


def _figure(path: Path, title: str, panels: list[tuple[str, list[str], dict]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (name, groups, series) in zip(axes[0], panels):
        _bars(ax, groups, series)
        ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table1(
    spec: ModelSpec, dataset: Path, out: Path, limit: int | None, batch_size: str,
    resume: bool = False, tier: str = "default",
) -> Path:  # fmt: skip
    sizes = TIERS[tier][0]
    prefix = "" if tier == "default" else tier
    tasks = {
        (n, lo, hi): f"interrupt_bench_{grid_config_name(n, lo, hi, prefix)}_controls"
        for n in sizes
        for lo, hi in GRID_INTERVALS
    }
    name = "table1" if tier == "default" else f"table1-{tier}"
    results = {}
    saved = out / f"{name}.json"
    if resume and saved.exists():  # configs an interrupted run finished, same model and limit
        results = {t: r for t, r in json.loads(saved.read_text()).items()
                   if r.get("model") == spec.label and r.get("sample_len") == limit}  # fmt: skip
    for task in tasks.values():  # one config at a time: a long run keeps what it finished
        if task in results:
            continue
        samples = out / f"{name}_samples_{task}.jsonl"
        results[task] = {**run_lm_eval(spec, [task], dataset, limit, batch_size, samples)[task],
                         "model": spec.label}  # fmt: skip
        saved.write_text(json.dumps(results, indent=2, default=str))
    shots = results[tasks[(5, 0, 100)]].get("n-shot")
    lines = [
        f"Table 1: {spec.label} over the {tier} tier's grid ({limit or 'all'} test episodes "
        f"per config, {shots}-shot, each played interrupted, without cuts and task by task)",
        "",
    ]
    intervals = [f"budgets {lo}–{hi}" for lo, hi in GRID_INTERVALS]
    panels = []
    shown = (("accuracy", "strict"), ("accuracy_single", "strict"),
             ("interruption_cost", "strict"), ("resumption_rate", "strict"))  # fmt: skip
    for metric, filt in shown:
        lines += [
            f"**{metric}** ({filt})",
            "",
            "| tasks | " + " | ".join(intervals) + " |",
            "|---|" + "---|" * len(GRID_INTERVALS),
        ]
        series = {}
        for n in sizes:
            row = [tasks[(n, lo, hi)] for lo, hi in GRID_INTERVALS]
            cells = [cell(results, t, metric, filt) for t in row]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
            series[f"{n} tasks"] = [results[t][f"{metric},{filt}"] for t in row]
        lines.append("")
        panels.append((f"{metric} ({filt})", [i.split()[1] for i in intervals], series))
    _figure(out / f"{name}.png", f"Table 1 ({tier} tier): {spec.label}", panels)
    return _write(out / f"{name}.md", lines)


def table2(
    specs: list[ModelSpec], dataset: Path, out: Path, limit: int | None, batch_size: str,
    task: str = "interrupt_bench", name: str = "table2", resume: bool = False,
) -> Path:  # fmt: skip
    results, done = {}, {}
    if resume and (out / f"{name}.json").exists():  # rows of an interrupted run, same limit
        done = {k: v for k, v in json.loads((out / f"{name}.json").read_text()).items()
                if v.get("sample_len") == limit or limit is None}  # fmt: skip
    for i, spec in enumerate(specs):
        samples = out / f"{name}_samples_{i}.jsonl"
        if spec.label in done and samples.exists():
            results[spec.label] = done[spec.label]
            continue
        results[spec.label] = run_lm_eval(spec, [task], dataset, limit, batch_size, samples)[task]
        (out / f"{name}.json").write_text(json.dumps(results, indent=2, default=str))
    split = "validation" if "validation" in task else "test"
    shown = PAIRED_METRICS if "controls" in task else METRICS
    lines = [
        f"{name}: models on `{task}` ({limit or 'all'} {split} episodes)",
        "",
        "| model | n-shot | filter | " + " | ".join(shown) + " |",
        "|---|---|---|" + "---|" * len(shown),
    ]
    for label, res in results.items():
        for filt in FILTERS:
            cells = [cell({"r": res}, "r", k, filt) for k in shown]
            lines.append(f"| {label} | {res.get('n-shot')} | {filt} | " + " | ".join(cells) + " |")
    panels = [
        (f"{metric} (strict / flexible)", list(results),
         {f: [r[f"{metric},{f}"] for r in results.values()] for f in FILTERS})
        for metric in (("accuracy", "accuracy_single", "interruption_cost") if "controls" in task
                       else ("accuracy", "answer_rate", "reattempts"))
    ]  # fmt: skip
    _figure(out / f"{name}.png", f"{name}: {task}", panels)
    return _write(out / f"{name}.md", lines)


def fewshot_grid(
    model: str, dataset: Path, out: Path, limit: int | None, batch_size: str, resume: bool = False
) -> Path:
    """The validation-split measurement behind the task's default shots: 0–3 shots, the
    demonstrations as chat turns or inside the system prompt."""
    specs = [parse_model(f"{model},num_fewshot=0")]
    for k in (1, 2, 3):
        for placement in ("turns", "system"):
            specs.append(parse_model(f"{model},num_fewshot={k},placement={placement}"))
    return table2(
        specs, dataset, out, limit, batch_size, "interrupt_bench_validation", "fewshot", resume
    )


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines).rstrip() + "\n")
    print(path.read_text())
    return path


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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.what == "figure1":
        if not args.log:
            parser.error("figure1 needs --log OUTPUT_DIR/train_log.jsonl")
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
        table1(parse_model(args.model[0]), dataset, out, args.limit, args.batch_size, args.resume,
               args.tier)  # fmt: skip
    elif args.what == "fewshot":
        fewshot_grid(args.model[0], dataset, out, args.limit, args.batch_size, args.resume)
    else:
        specs = [parse_model(m) for m in args.model]
        name = "table2" if args.tier == "default" else f"table2-{args.tier}"
        table2(specs, dataset, out, args.limit, args.batch_size, TIERS[args.tier][1], name,
               args.resume)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
