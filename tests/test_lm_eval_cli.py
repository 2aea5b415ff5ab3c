"""The real ``lm_eval`` CLI on a tiny Llama built in a fixture, chat and plain mode."""

import json
import re
import subprocess
import sys

import pytest

from lm_eval_tasks import include_path

from .conftest import ROOT, samples_file

METRICS = [
    "accuracy",
    "reattempts",
    "reattempt_rate",
    "answer_rate",
    "resumption_rate",
    "format_rate",
    "accuracy_math",
    "accuracy_translation",
    "accuracy_ordering",
]


def run_lm_eval(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lm_eval", "--include_path", include_path(), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "plain"])
def test_lm_eval_cli_end_to_end(tiny_model, small_dataset, tmp_path, chat):
    out = tmp_path / "out"
    proc = run_lm_eval(
        "--model",
        "hf",
        "--model_args",
        f"pretrained={tiny_model},dtype=float32",
        "--tasks",
        "interrupt_bench",
        "--metadata",
        json.dumps({"dataset_path": str(small_dataset)}),
        "--limit",
        "6",
        "--batch_size",
        "6",
        "--log_samples",
        "--output_path",
        str(out),
        *(["--apply_chat_template", "--system_instruction", "Be brief."] if chat else []),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for metric in METRICS:
        assert re.search(rf"\|\s*{metric}\s*\|", proc.stdout), metric
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"][
        "interrupt_bench"
    ]
    assert all(f"{m},strict" in results for m in METRICS)
    assert results["accuracy_stderr,strict"] != "N/A"

    logged = [
        json.loads(line) for line in samples_file(out, "interrupt_bench").read_text().splitlines()
    ]
    assert sorted(s["filter"] for s in logged) == ["flexible"] * 6 + ["strict"] * 6
    samples = [s for s in logged if s["filter"] == "strict"]
    for sample in samples:
        session = json.loads(sample["resps"][0][0])["sessions"][0]
        for turn in session["turns"]:
            # Tokens the model generated (on the session engine: counted, not re-encoded;
            # re-encoding decoded text can give more ids than were generated).
            assert turn["output_tokens"] <= turn["budget"], turn
            if turn["cut"]:
                assert turn["output_tokens"] == turn["budget"], turn
            if turn["budget"] == 0:
                assert turn["output"] == "" and turn["prompt"] is None
            else:
                assert turn["user"] in turn["prompt"]
                assert ("<|assistant|>" in turn["prompt"]) == chat
                assert ("Be brief." in turn["prompt"]) == chat
        assert len(session["verdicts"]) == sample["doc"]["n_tasks"]


def test_num_fewshot_puts_demonstration_sessions_before_the_real_one(
    tiny_model, small_dataset, tmp_path
):
    out = tmp_path / "out"
    proc = run_lm_eval(
        "--model", "hf",
        "--model_args", f"pretrained={tiny_model},dtype=float32",
        "--tasks", "interrupt_bench",
        "--metadata", json.dumps({"dataset_path": str(small_dataset)}),
        "--num_fewshot", "2",
        "--apply_chat_template",
        "--limit", "3", "--batch_size", "3",
        "--log_samples", "--output_path", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for filt in ("strict", "flexible"):  # n-shot 2 on both filter rows of the table
        assert re.search(rf"\|{filt}\s*\|\s*2\|accuracy\s*\|", proc.stdout), filt
    report = json.loads(next(out.rglob("results_*.json")).read_text())
    assert report["n-shot"]["interrupt_bench"] == 2
    closing = "No more questions will come."
    samples = [json.loads(x) for x in samples_file(out, "interrupt_bench").read_text().splitlines()]
    for sample in samples:
        session = json.loads(sample["resps"][0][0])["sessions"][0]
        first = next(t for t in session["turns"] if t["prompt"])
        # two whole demonstration sessions (each ends with its closing turn), then the question
        assert first["prompt"].count(closing) == 2
        assert first["prompt"].count("<question task=1>") == 3
        assert first["prompt"].rindex(closing) < first["prompt"].rindex(first["user"])
        assert first["prompt"].count("<|assistant|>") > 2 * 3  # demonstrations as chat turns


def test_too_many_shots_fail_before_any_model_call(tiny_model, small_dataset, tmp_path):
    args = (
        "--model", "hf",
        "--model_args", f"pretrained={tiny_model},dtype=float32",
        "--tasks", "interrupt_bench",
        "--metadata", json.dumps({"dataset_path": str(small_dataset)}),
        "--limit", "2",
    )  # fmt: skip
    proc = run_lm_eval(*args, "--num_fewshot", "31")
    assert proc.returncode != 0
    assert "--num_fewshot 31 is larger than the train split (30 episodes)" in proc.stderr
    assert "Running generate_until requests" not in proc.stderr
