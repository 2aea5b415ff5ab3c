"""The paper's tables as markdown, JSON and PNG: Table 1 (one model over a tier's config
grid), Table 2 (several models on one task) and the few-shot grid (Table 2 on the
validation split). Each row runs once through lm-eval and is saved as it finishes, so a
long run keeps what it finished and ``--resume`` continues it."""

from __future__ import annotations

import json
from pathlib import Path

from commands.charts import figure
from commands.lm_eval_runs import cell, run_lm_eval
from commands.model_spec import ModelSpec, check_distinct, digest, fewshot_specs, row_labels
from commands.resume import resumable, row_identity
from commands.tiers import TIERS
from interrupt_bench.config import GRID_INTERVALS, grid_config_name
from interrupt_bench.costs import PAIRED_MEAN_METRICS, PAIRED_RATIO_METRICS
from interrupt_bench.scoring import MEAN_METRICS, RATIO_METRICS


def columns(known: tuple[str, ...], *names: str) -> tuple[str, ...]:
    """``names`` in this order, each a metric the core defines: a metric renamed there
    fails here, on import, not in a table after the models ran."""
    unknown = [name for name in names if name not in known]
    if unknown:
        raise KeyError(f"not metrics of interrupt_bench: {', '.join(unknown)}")
    return names


# The columns of a table of the benchmark's tasks, and of the paired controls' (the three
# conditions, the two costs, the rest).
METRICS = columns(MEAN_METRICS + RATIO_METRICS, "accuracy", "reattempts", "answer_rate",
                  "resumption_rate", "format_rate")  # fmt: skip
PAIRED_METRICS = columns(PAIRED_MEAN_METRICS + PAIRED_RATIO_METRICS,
                         "accuracy", "accuracy_nocut", "accuracy_single", "interruption_cost",
                         "interleaving_cost", "answer_rate", "resumption_rate")  # fmt: skip
FILTERS = ("strict", "flexible")


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
    results = resumable(saved, rows, lambda task: out / f"{name}_samples_{task}.jsonl", resume)
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
    figure(out / f"{name}.png", f"Table 1 ({tier} tier): {spec.label}", panels)
    return _write(out / f"{name}.md", lines)


def table2(
    specs: list[ModelSpec], dataset: Path, out: Path, limit: int | None, batch_size: str,
    task: str = "interrupt_bench", name: str = "table2", resume: bool = False,
) -> Path:  # fmt: skip
    check_distinct(specs)
    labels = row_labels(specs)
    rows = {label: row_identity(spec, task, dataset, limit) for label, spec in zip(labels, specs)}

    def samples_of(label: str) -> Path:
        return out / f"{name}_samples_{digest(rows[label])}.jsonl"

    results = resumable(out / f"{name}.json", rows, samples_of, resume)
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
    figure(out / f"{name}.png", f"{name}: {task}", panels)
    return _write(out / f"{name}.md", lines)


def _episodes(results: dict[str, dict], limit: int | None) -> str:
    """How many episodes the rows hold, as lm-eval counted them (``sample_len``): a title
    states what was run, not what was asked for (a limit above the split's size)."""
    counts = sorted({r["sample_len"] for r in results.values() if "sample_len" in r})
    if not counts:
        return str(limit or "all")
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return n if limit else f"all {n}"


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
