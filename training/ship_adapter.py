"""Ship a trained adapter with its evaluation: copy the adapter that
``training/before_after.sh`` evaluated (``adapter_model.safetensors``,
``adapter_config.json``, the training curves and log) into a directory a user evaluates
with ``peft=`` and pushes to the Hub as it is, with a model card
(``hub_cards/model_card.md.j2``) holding the before/after table exactly as lm-eval
reported it and the commands that made both.

    python training/ship_adapter.py --run out/run2 --eval out/before_after \\
        --dest training/adapters/smollm2-135m-instruct-easy

The adapter in ``--run`` must be the one the evaluation loaded (same bytes), so the card's
numbers are the shipped weights' numbers."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from training.config import TrainConfig
from training.report import read_log, write_adapter_card

# (column, lm-eval metric): the interrupted sessions' accuracy, the same episodes with no
# cuts, their paired difference, and what the adapter is trained to change.
COLUMNS = (
    ("accuracy", "accuracy"),
    ("no cuts", "accuracy_nocut"),
    ("interruption cost", "interruption_cost"),
    ("resumption", "resumption_rate"),
    ("re-attempts", "reattempt_rate"),
    ("overwrites", "overwrite_rate"),
)
SHIPPED = ("adapter_model.safetensors", "adapter_config.json", "training_curves.png",
           "train_log.jsonl")  # fmt: skip
MAX_ADAPTER_BYTES = 8 * 1024 * 1024


def _results(run_dir: Path) -> dict:
    """lm-eval's reports under ``run_dir`` (one run per task), merged: ``results``,
    ``n-samples`` and ``configs`` of every task, the ``config`` of the runs (one model, so
    one config)."""
    files = sorted(run_dir.rglob("results_*.json"))
    if not files:
        raise SystemExit(f"no lm-eval results under {run_dir}: run training/before_after.sh first")
    merged: dict = {"results": {}, "n-samples": {}, "configs": {}}
    for path in files:  # sorted by lm-eval's time stamp within a task: the newest run wins
        report = json.loads(path.read_text())
        for key in ("results", "n-samples", "configs"):
            merged[key].update(report[key])
        merged["config"] = report["config"]
    return merged


def _cell(metrics: dict, name: str) -> str:
    value = metrics[f"{name},strict"]
    err = metrics.get(f"{name}_stderr,strict")
    return f"{value:.3f} ± {err:.3f}" if isinstance(err, float) else f"{value:.3f}"


def before_after_table(eval_dir: Path, trained_on: str = "") -> str:
    """The markdown table of ``eval_dir/base`` and ``eval_dir/adapter``: one row per
    (task, model), the training config (``trained_on``) first, the strict filter, numbers
    and stderr as lm-eval reported them."""
    runs = {name: _results(eval_dir / name) for name in ("base", "adapter")}
    head = "| config | model | episodes | " + " | ".join(c for c, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (3 + len(COLUMNS))]
    # The dataset config each task ran on, as lm-eval recorded it from the task's YAML.
    configs = {
        task: runs["base"]["configs"][task]["dataset_name"] for task in runs["base"]["results"]
    }
    for task in sorted(configs, key=lambda t: (configs[t] != trained_on, t)):
        config = configs[task]
        for name, report in runs.items():
            if task not in report["results"]:
                continue  # evaluated on the base model only
            metrics = report["results"][task]
            n = report["n-samples"][task]["effective"]
            cells = " | ".join(_cell(metrics, m) for _, m in COLUMNS)
            lines.append(f"| {config} | {name} | {n} | {cells} |")
    return "\n".join(lines)


def evaluated_adapter(eval_dir: Path) -> Path:
    """The ``peft=`` path of the adapter run, from lm-eval's own record of its model args."""
    args = _results(eval_dir / "adapter")["config"]["model_args"]
    pairs = dict(p.split("=", 1) for p in args.split(",")) if isinstance(args, str) else args
    return Path(pairs["peft"])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ship(run: Path, eval_dir: Path, dest: Path) -> Path:
    """Copy the evaluated adapter into ``dest`` and write its card; returns the card."""

    evaluated = evaluated_adapter(eval_dir) / "adapter_model.safetensors"
    weights = run / "adapter_model.safetensors"
    if not weights.exists():
        raise SystemExit(
            f"{weights} does not exist: --run takes a finished training/reinforce.py output_dir"
        )
    if _sha(weights) != _sha(evaluated):
        raise SystemExit(f"{weights} is not the adapter the evaluation loaded ({evaluated}); "
                         "evaluate this one with training/before_after.sh first")  # fmt: skip
    if weights.stat().st_size > MAX_ADAPTER_BYTES:
        raise SystemExit(f"{weights} is {weights.stat().st_size:,} bytes, over the 8 MiB limit")
    dest.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        shutil.copy2(run / name, dest / name)
    changes = run / "config_changes.jsonl"  # a run resumed with other values
    (dest / changes.name).unlink(missing_ok=True)
    if changes.exists():
        shutil.copy2(changes, dest / changes.name)
    cfg = TrainConfig(**json.loads((run / "train_config.json").read_text()))
    rows = read_log(run / "train_log.jsonl")
    validated = [r for r in rows if "val_reward" in r]
    # The last step's validation is the shipped adapter's (finish() validates the same
    # greedy sessions again); a run that ended between validations has none to show.
    final = validated[-1] if validated and validated[-1]["step"] == rows[-1]["step"] else {}
    collapse = next((r["collapse"] for r in rows if r.get("collapse")), None)
    state = {"step": rows[-1]["step"], "collapse": collapse}
    return write_adapter_card(
        dest, cfg, final, state, evaluation=before_after_table(eval_dir, cfg.dataset_config)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="training/reinforce.py output_dir")
    parser.add_argument("--eval", type=Path, required=True, help="training/before_after.sh OUT")
    parser.add_argument("--dest", type=Path, required=True)
    args = parser.parse_args(argv)
    print(ship(args.run, args.eval, args.dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
