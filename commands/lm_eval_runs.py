"""One lm-eval run of a row through lm-eval's Python API, on a dataset built here when it
is missing, and one cell of its results as a table shows it."""

from __future__ import annotations

import json
from pathlib import Path

from commands.model_spec import ModelSpec
from lm_eval_tasks import include_path


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


def ensure_dataset(path: Path) -> Path:
    if not (path / "build_info.json").exists():
        from dataset_builder import build_dataset
        from interrupt_bench.config import CONFIGS

        build_dataset(path, list(CONFIGS.values()))
    return path
