"""The reproduction commands on a miniature scale: outputs exist and hold lm-eval's numbers."""

import json
import subprocess
import sys

from dataset_builder import build_dataset
from interrupt_bench.config import CONFIGS

from .conftest import ROOT


def _run(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "commands.reproduce", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_table1_and_table2_hold_what_lm_eval_reported(mini, tiny_model, tmp_path):
    data = tmp_path / "data"
    build_dataset(data, list(CONFIGS.values()), splits=["test"], sizes={"test": 2}, progress=False)
    out = tmp_path / "out"
    common = ("--dataset-path", str(data), "--limit", "2", "--batch-size", "4", "--out", str(out))
    _run("table1", "--model", f"{mini},num_fewshot=0", *common)  # test split only: 0 shots
    results = json.loads((out / "table1.json").read_text())
    table = (out / "table1.md").read_text()
    assert len(results) == 9 and (out / "table1.png").exists()
    acc = results["interrupt_bench_tasks10_budget50to200_controls"]
    assert f"{acc['accuracy,strict']:.3f} ± {acc['accuracy_stderr,strict']:.3f}" in table
    cost = f"{acc['interruption_cost,strict']:.3f} ± {acc['interruption_cost_stderr,strict']:.3f}"
    assert cost in table

    _run("table2", "--model", f"{mini},num_fewshot=0", "--model", f"{tiny_model},num_fewshot=0",
         "--tier", "easy", *common)  # fmt: skip
    results = json.loads((out / "table2-easy.json").read_text())
    table = (out / "table2-easy.md").read_text()
    lines = table.strip().splitlines()
    assert (out / "table2-easy.png").exists() and len(lines) == 8  # title, blank, head, rule, 2x2
    assert "interrupt_bench_easy_controls" in lines[0]
    assert [line.split(" | ")[2] for line in lines[4:]] == ["strict", "flexible"] * 2
    for res in results.values():
        assert f"{res['interruption_cost,strict']:.3f}" in table
        assert f"{res['accuracy_single,flexible']:.3f}" in table


def test_figure1_from_a_training_log(tmp_path):
    log = tmp_path / "train_log.jsonl"
    rows = [
        {
            "step": i,
            "reward": i / 10,
            "accuracy": i / 20,
            "reattempts": 0.1,
            "entropy": 2.0,
            "kl": 0.0,
        }
        for i in range(1, 6)
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _run("figure1", "--log", str(log), "--out", str(tmp_path))
    assert (tmp_path / "figure1.png").read_bytes()[:4] == b"\x89PNG"


def test_training_curves_smooth_with_a_trailing_window():
    from training.report import running_mean

    assert running_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert running_mean([2.0, 4.0], 10) == [2.0, 3.0]


def test_model_rows_name_the_adapter_and_keep_model_args(tmp_path):
    from commands.reproduce import parse_model
    from local_models.hardware import best_dtype

    (tmp_path / "small").mkdir()
    spec = parse_model(str(tmp_path / "small"))
    assert spec.model_args == f"pretrained={tmp_path / 'small'},dtype={best_dtype()}"
    assert spec.label == "small, plain" and spec.num_fewshot is None and not spec.chat
    spec = parse_model(f"pretrained={tmp_path / 'small'},peft=/o/rl,num_fewshot=2,chat=true")
    assert spec.model_args == f"pretrained={tmp_path / 'small'},peft=/o/rl,dtype={best_dtype()}"
    assert spec.label == "rl + LoRA, 2-shot" and spec.chat and spec.num_fewshot == 2
    spec = parse_model("org/model,dtype=float32,chat=false")
    assert spec.model_args == "pretrained=org/model,dtype=float32"
    assert spec.label == "model, plain"
