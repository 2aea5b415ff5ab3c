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
Bad arguments are refused in one line before the dataset build or any model load."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from interrupt_bench.config import EASY_GRID_TASKS, GRID_INTERVALS, GRID_TASKS, grid_config_name
from interrupt_bench.demonstrations import PLACEMENTS
from interrupt_bench.errors import InterruptBenchError
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
DTYPES = ("auto", "float32", "bfloat16", "float16")  # what lm-eval's hf model loads on our hardware
BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
# A Hub model id: NAME or OWNER/NAME, nothing that reads as a file system path.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
MODEL_FORM = "a model name, directory or Hub id, then KEY=VALUE pairs"


class UsageError(InterruptBenchError):
    """A command-line value that cannot run: refused with the fix before any model loads,
    so a typo costs a second rather than a dataset build and a model load."""


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

    @property
    def args(self) -> dict[str, str]:
        """lm-eval's model args as a dict (``model_args`` is their comma-joined form)."""
        return dict(part.split("=", 1) for part in self.model_args.split(","))

    def identity(self) -> dict:
        """Everything about the model that changes its numbers: every model arg (dtype,
        adapter path included) and a stamp of the weights in each local directory, so a
        retrained adapter saved under the same name is not taken for the old one."""
        stamps = {k: _dir_stamp(Path(v)) for k, v in self.args.items()
                  if k in ("pretrained", "peft") and Path(v).is_dir()}  # fmt: skip
        return {
            "model_args": self.model_args,
            "weights": stamps,
            "num_fewshot": self.num_fewshot,
            "chat": self.chat,
            "placement": self.placement,
        }


def _dir_stamp(directory: Path) -> str:
    """Names, sizes and modification times of a model directory's files: changes whenever
    the weights or the tokenizer are rewritten, costs no read of the weights."""
    entries = sorted(
        (f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in directory.iterdir() if f.is_file()
    )
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def _dataset_stamp(dataset: Path) -> dict:
    """Which dataset a row was computed on: its directory and its build record (configs,
    seed, counts), so a rebuilt dataset does not reuse the old dataset's rows."""
    info = dataset / "build_info.json"
    digest = hashlib.sha256(info.read_bytes()).hexdigest()[:16] if info.is_file() else None
    return {"path": str(dataset.resolve()), "build_info": digest}


def row_identity(spec: ModelSpec, task: str, dataset: Path, limit: int | None) -> dict:
    """What defines one row of a table: the model as run, the task, the dataset and the
    episode limit. ``--resume`` reuses a saved row only when all of it matches."""
    return {**spec.identity(), "task": task, "dataset": _dataset_stamp(dataset), "limit": limit}


def _digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def check_distinct(specs: list[ModelSpec]) -> None:
    """Refuse one model given twice with the same settings: its two rows would be one."""
    seen: set[str] = set()
    for spec in specs:
        if _digest(spec.identity()) in seen:
            raise UsageError(
                f"--model {spec.model_args} ({spec.label}) is given twice with the same "
                "settings; give it once"
            )
        seen.add(_digest(spec.identity()))


def row_labels(specs: list[ModelSpec]) -> list[str]:
    """One distinct label per row: rows that share a label (two dtypes of one model, two
    adapters saved as ``best``) get the settings that tell them apart appended, so no row
    overwrites another in the table or its JSON."""
    settings = [
        {**spec.args, "num_fewshot": spec.num_fewshot, "chat": spec.chat,
         "placement": spec.placement}
        for spec in specs
    ]  # fmt: skip
    labels = []
    for spec, mine in zip(specs, settings):
        twins = [theirs for other, theirs in zip(specs, settings) if other.label == spec.label]
        keys = dict.fromkeys(k for theirs in twins for k in theirs)
        differ = [k for k in keys if any(theirs.get(k) != mine.get(k) for theirs in twins)]
        extra = ", ".join(f"{k}={mine.get(k, '-')}" for k in differ)
        labels.append(f"{spec.label} ({extra})" if differ else spec.label)
    return labels


def parse_model(text: str) -> ModelSpec:
    """``--model`` is a model name (``interrupt-bench-models list``), directory
    or Hub id, optionally followed by lm-eval model args and our own keys, for example
    ``smollm2-135m-instruct,num_fewshot=0``, ``gemma-3-270m,chat=false`` or
    ``pretrained=DIR,peft=ADAPTER``. ``dtype`` defaults to bfloat16 where the hardware
    has it, float32 otherwise."""
    from local_models.hardware import best_dtype
    from local_models.registry import MODELS, has_chat_template, model_path

    args, shots, chat, placement = check_model_text(text)
    given = args["pretrained"]
    if given in MODELS or Path(given).is_dir():  # absolute: one model, one row identity
        args["pretrained"] = os.path.abspath(model_path(given))
    if "peft" in args and Path(args["peft"]).is_dir():
        args["peft"] = os.path.abspath(args["peft"])
    args.setdefault("dtype", best_dtype())
    chat_ok = has_chat_template(args["pretrained"]) if chat is None else chat
    name = Path(args.get("peft") or given).name + (" + LoRA" if "peft" in args else "")
    return ModelSpec(
        model_args=",".join(f"{k}={v}" for k, v in args.items()),
        name=name,
        num_fewshot=shots,
        chat=chat_ok,
        placement=placement,
    )


def check_model_text(text: str) -> tuple[dict[str, str], int | None, bool | None, str | None]:
    """``--model``'s text checked without loading anything: lm-eval's model args (each key
    once, a known dtype), and our own keys as values (shots, chat, placement; None where
    not given)."""
    args = _split_model_args(text)
    ours = {k: args.pop(k) for k in OUR_KEYS if k in args}
    shots = _fewshot(text, ours.get("num_fewshot"))
    chat = ours.get("chat")
    if chat is not None and chat.lower() not in BOOLEANS:
        raise UsageError(f"--model {text!r}: chat={chat} is not a boolean; use chat=true or false")
    placement = ours.get("placement")
    if placement is not None and placement not in ("auto", *PLACEMENTS):
        raise UsageError(
            f"--model {text!r}: placement={placement} is not one of auto, {', '.join(PLACEMENTS)}"
        )
    if args.get("dtype", "auto") not in DTYPES:
        raise UsageError(
            f"--model {text!r}: dtype={args['dtype']} is not one of {', '.join(DTYPES)}"
        )
    return args, shots, None if chat is None else BOOLEANS[chat.lower()], placement


def _split_model_args(text: str) -> dict[str, str]:
    """``--model``'s text as KEY=VALUE pairs (a leading bare model becomes ``pretrained``),
    each key once: lm-eval would otherwise fail on a stray word deep in its model
    constructor, or a repeated key would silently win over the first."""
    parts = [part.strip() for part in text.split(",")]
    if parts and parts[0] and "=" not in parts[0]:
        parts[0] = f"pretrained={parts[0]}"
    args: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not (sep and key and value):
            raise UsageError(
                f"--model {text!r}: {part!r} is not KEY=VALUE; write {MODEL_FORM}, "
                "e.g. pretrained=DIR,peft=ADAPTER,num_fewshot=0"
            )
        if key in args:
            raise UsageError(f"--model {text!r}: {key} is given twice; keep one")
        args[key] = value
    if "pretrained" not in args:
        raise UsageError(f"--model {text!r} names no model; write {MODEL_FORM}")
    return args


def _fewshot(text: str, value: str | None) -> int | None:
    """``num_fewshot`` as a count of demonstrations: a whole number, zero or more."""
    if value is None:
        return None
    try:
        shots = int(value)
    except ValueError:
        shots = -1
    if shots < 0:
        raise UsageError(f"--model {text!r}: num_fewshot={value} is not a count; use 0 or more")
    return shots


def check_reachable(text: str) -> None:
    """Refuse, before the dataset build, torch and lm-eval, a ``--model`` whose model or
    adapter cannot be loaded: a path that does not exist, or a Hub id that is not cached
    while the Hub is offline. lm-eval would fail on it only after every earlier row ran."""
    import huggingface_hub
    from huggingface_hub import constants

    from local_models.registry import MODELS

    for key, value in _split_model_args(text).items():
        if key not in ("pretrained", "peft") or value in MODELS or Path(value).is_dir():
            continue
        what = "model" if key == "pretrained" else "adapter"
        if not HUB_ID.match(value):
            raise UsageError(
                f"{key}={value}: no such {what} directory; pass an existing "
                "directory, a name from `interrupt-bench-models list` or a Hub id"
            )
        cached = huggingface_hub.try_to_load_from_cache(
            value, "adapter_config.json" if key == "peft" else "config.json"
        )
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "true", "yes")
        if (offline or constants.HF_HUB_OFFLINE) and not isinstance(cached, str):
            raise UsageError(
                f"{key}={value}: not a {what} directory here, nor a Hub {what} in the "
                "local cache, and HF_HUB_OFFLINE is set; pass a directory, or "
                "download it once with the Hub online"
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
    saved = out / f"{name}.json"
    rows = {task: row_identity(spec, task, dataset, limit) for task in tasks.values()}
    results = _resumable(saved, rows, lambda task: out / f"{name}_samples_{task}.jsonl", resume)
    for task in tasks.values():  # one config at a time: a long run keeps what it finished
        if task in results:
            continue
        samples = out / f"{name}_samples_{task}.jsonl"
        results[task] = {**run_lm_eval(spec, [task], dataset, limit, batch_size, samples)[task],
                         "model": spec.label, "row": rows[task]}  # fmt: skip
        saved.write_text(json.dumps(results, indent=2, default=str))
    shots = results[tasks[(5, 0, 100)]].get("n-shot")
    lines = [
        f"Table 1: {spec.label} over the {tier} tier's grid ({_episodes(results, limit)} test "
        f"episodes per config, {shots}-shot, each played interrupted, without cuts and task "
        "by task)",
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
    check_distinct(specs)
    labels = row_labels(specs)
    rows = {label: row_identity(spec, task, dataset, limit) for label, spec in zip(labels, specs)}

    def samples_of(label: str) -> Path:
        return out / f"{name}_samples_{_digest(rows[label])}.jsonl"

    results = _resumable(out / f"{name}.json", rows, samples_of, resume)
    for label, spec in zip(labels, specs):
        if label in results:
            continue
        results[label] = {
            **run_lm_eval(spec, [task], dataset, limit, batch_size, samples_of(label))[task],
            "row": rows[label],
        }
        done = {k: results[k] for k in labels if k in results}  # the order of --model
        (out / f"{name}.json").write_text(json.dumps(done, indent=2, default=str))
    results = {label: results[label] for label in labels}
    split = "validation" if "validation" in task else "test"
    shown = PAIRED_METRICS if "controls" in task else METRICS
    lines = [
        f"{name}: models on `{task}` ({_episodes(results, limit)} {split} episodes)",
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


def _episodes(results: dict[str, dict], limit: int | None) -> str:
    """How many episodes the rows hold, as lm-eval counted them (``sample_len``): a title
    states what was run, not what was asked for (a limit above the split's size)."""
    counts = sorted({r["sample_len"] for r in results.values() if "sample_len" in r})
    if not counts:
        return str(limit or "all")
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return n if limit else f"all {n}"


def _resumable(saved: Path, rows: dict[str, dict], samples_of, resume: bool) -> dict[str, dict]:
    """The rows of ``saved`` that ``--resume`` may keep: those whose recorded identity
    (model as run, task, dataset, limit) equals the one asked for now and whose samples
    file is still there. A row from another limit, dtype, adapter or dataset is run again,
    never shown under this run's title."""
    if not (resume and saved.exists()):
        return {}
    try:
        old = json.loads(saved.read_text())
    except (OSError, ValueError):
        return {}  # a file cut short by a kill: nothing in it is trusted
    if not isinstance(old, dict):
        return {}
    return {key: value for key, value in old.items()
            if key in rows and isinstance(value, dict) and value.get("row") == rows[key]
            and samples_of(key).exists()}  # fmt: skip


def fewshot_specs(model: str) -> list[ModelSpec]:
    """The rows of the few-shot grid: 0–3 shots, the demonstrations as chat turns or
    inside the system prompt."""
    specs = [parse_model(f"{model},num_fewshot=0")]
    for k in (1, 2, 3):
        for placement in ("turns", "system"):
            specs.append(parse_model(f"{model},num_fewshot={k},placement={placement}"))
    return specs


def fewshot_grid(
    model: str, dataset: Path, out: Path, limit: int | None, batch_size: str, resume: bool = False
) -> Path:
    """The validation-split measurement behind the task's default shots."""
    return table2(fewshot_specs(model), dataset, out, limit, batch_size,
                  "interrupt_bench_validation", "fewshot", resume)  # fmt: skip


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
        fixed = sorted(set(_split_model_args(args.model[0])) & {"num_fewshot", "placement"})
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
    dataset = _ensure_dataset(Path(args.dataset_path))
    if args.what == "table1":
        table1(specs[0], dataset, out, args.limit, args.batch_size, args.resume, args.tier)
    elif args.what == "fewshot":
        table2(specs, dataset, out, args.limit, args.batch_size, "interrupt_bench_validation",
               "fewshot", args.resume)  # fmt: skip
    else:
        name = "table2" if args.tier == "default" else f"table2-{args.tier}"
        table2(specs, dataset, out, args.limit, args.batch_size, TIERS[args.tier][1], name,
               args.resume)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
