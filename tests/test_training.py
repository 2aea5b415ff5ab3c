"""training/reinforce.py end to end on the CPU: accelerate launch, a saved adapter that
lm_eval loads with peft=, two data-parallel processes, kill -9 and resume, bad input."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dataset_builder import build_dataset
from interrupt_bench.config import get_config

from .conftest import ROOT
from .test_lm_eval_cli import run_lm_eval

SCRIPT = str(ROOT / "training" / "reinforce.py")
ACCELERATE = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--cpu",
    "--num_processes",
    "1",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]


def _args(model, dataset, out, *extra):
    return [
        "--config",
        str(ROOT / "training" / "configs" / "tiny-cpu.yaml"),
        "--model_name_or_path",
        str(model),
        "--dataset_path",
        str(dataset),
        "--dataset_config",
        "tasks2_budget0to50",
        "--output_dir",
        str(out),
        "--episodes_per_step",
        "2",
        "--samples_per_episode",
        "2",
        "--eval_episodes",
        "4",
        *extra,
    ]


def _run(cmd, timeout=1200, env=None):
    """Run a training command in its own process group; a run that hangs is killed whole
    (launcher and workers) and fails with the end of its output, which holds every
    thread's stack (INTERRUPT_BENCH_TRACEBACK_AFTER) when it hung."""
    env = {**os.environ, "INTERRUPT_BENCH_TRACEBACK_AFTER": str(timeout * 0.8), **(env or {})}
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        tail = f"stdout:\n{out[-2000:]}\nstderr:\n{err[-6000:]}"
        pytest.fail(f"{cmd[2:4]} hung for {timeout} s; {tail}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _log(out, name="train_log.jsonl"):
    """The training steps' rows (step 0, the starting policy's validation, left out)."""
    rows = [json.loads(line) for line in (out / name).read_text().splitlines()]
    return [r for r in rows if r["step"] > 0]


def _step0(out):
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [r for r in rows if r["step"] == 0]


def test_accelerate_launch_then_lm_eval_with_peft(tiny_model, small_dataset, tmp_path):
    out = tmp_path / "run"
    proc = _run(
        [
            *ACCELERATE,
            SCRIPT,
            *_args(
                tiny_model,
                small_dataset,
                out,
                "--max_steps",
                "3",
                "--eval_every",
                "2",
                "--save_every",
                "2",
                "--reward_cut_resumption",
                "1.0",
                "--tag_credit",
                "1.0",
            ),
        ],
        env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "first-step check" in proc.stdout and ": ok" in proc.stdout
    # `accelerate launch --cpu` exports OMP_NUM_THREADS=1 without --num_processes (and
    # passes on the one it was given, as here); the run uses the machine's cores anyway.
    assert f"1 process(es) of {len(os.sched_getaffinity(0))} CPU threads" in proc.stdout
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "README.md",
        "training_curves.png",
        "train_log.jsonl",
        "samples.jsonl",
    } <= {p.name for p in out.iterdir()}
    rows = _log(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in (
        "reward",
        "accuracy",
        "reattempts",
        "resumption_rate",
        "cut_resumption",
        "tag_credit",
        "kl",
        "entropy",
        "loss",
        "tokens_per_second",
        "mean_output_length",
    ):
        assert key in rows[0]
    assert "val_reward" in rows[1] and 0.0 <= rows[1]["val_cut_resumption"] <= 1.0
    assert (out / "checkpoints" / "step-0000002" / "trainer_state.json").exists()
    assert "peft=" in (out / "README.md").read_text()

    result = run_lm_eval(
        "--model",
        "hf",
        "--model_args",
        f"pretrained={tiny_model},peft={out},dtype=float32",
        "--tasks",
        "interrupt_bench",
        "--metadata",
        json.dumps({"dataset_path": str(small_dataset)}),
        "--limit",
        "3",
        "--batch_size",
        "3",
        "--apply_chat_template",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "accuracy" in result.stdout and "reattempts" in result.stdout


def test_two_data_parallel_processes(tiny_model, small_dataset, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        SCRIPT,
        *_args(tiny_model, small_dataset, out, "--max_steps", "2", "--eval_every", "2"),
    ]
    # 15 s when it works; a hang at exit (see the end of train()) fails in 4 minutes, not 10
    proc = _run(cmd, timeout=240, env={"ACCELERATE_USE_CPU": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Each process gets half the cores, whatever OMP_NUM_THREADS the launcher set.
    half = max(1, len(os.sched_getaffinity(0)) // 2)
    assert f"2 process(es) of {half} CPU threads" in proc.stdout
    assert [r["step"] for r in _log(out)] == [1, 2]
    assert len(_step0(out)) == 1 and "val_reward" in _step0(out)[0]  # the starting policy


def test_kill_and_resume_matches_an_uninterrupted_run(tiny_model, small_dataset, tmp_path):
    # An untrained model earns no accuracy; a format reward without a baseline gives every
    # sample a non-zero advantage, so the adapter really changes from step to step and the
    # resumed run must restore weights, optimizer and RNG exactly.
    extra = ("--max_steps", "5", "--save_every", "2", "--eval_every", "0")
    extra += ("--lora_dropout", "0.1", "--reward_format", "1.0", "--baseline", "none")
    extra += ("--sample_every", "1")  # steps taken again must not be logged twice
    straight = tmp_path / "straight"
    proc = _run([sys.executable, SCRIPT, *_args(tiny_model, small_dataset, straight, *extra)])
    assert proc.returncode == 0, proc.stderr[-3000:]

    killed = tmp_path / "killed"
    run = subprocess.Popen(
        [sys.executable, SCRIPT, *_args(tiny_model, small_dataset, killed, *extra)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step-0000002").exists():
        assert run.poll() is None and time.time() < deadline, (
            "run ended before its first checkpoint"
        )
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert not (killed / "adapter_model.safetensors").exists()
    resumed = _run(
        [
            sys.executable,
            SCRIPT,
            *_args(tiny_model, small_dataset, killed, *extra, "--resume", "true"),
        ]
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    # wall-clock figures: tokens per second and the phase timings differ between any two runs
    volatile = ("tokens_per_second", "rollout_s", "loss_s", "optimizer_s", "validation_s",
                "reference_s", "step_s")  # fmt: skip
    a = [{k: v for k, v in r.items() if k not in volatile} for r in _log(straight)]
    b = [{k: v for k, v in r.items() if k not in volatile} for r in _log(killed)]
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5]
    assert any(r["grad_norm"] > 0 for r in a[2:]), [(r["loss"], r["grad_norm"]) for r in a]
    assert a == b
    assert [r["step"] for r in _log(killed, "samples.jsonl")] == [1, 2, 3, 4, 5]
    assert _log(killed, "samples.jsonl") == _log(straight, "samples.jsonl")

    # A truncated checkpoint is named, and the previous complete one is offered.
    checkpoints = sorted((straight / "checkpoints").glob("step-*"))
    assert [c.name for c in checkpoints] == ["step-0000002", "step-0000004"]
    for f in checkpoints[-1].glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:7])
    before = sorted(p.name for p in straight.rglob("*"))
    damaged = _run(
        [sys.executable, SCRIPT, *_args(tiny_model, small_dataset, straight, *extra, "--resume",
                                        "true")]
    )  # fmt: skip
    assert damaged.returncode == 2, damaged.stderr[-2000:]
    last = damaged.stderr.strip().splitlines()[-1]
    assert f"checkpoint {checkpoints[-1]} cannot be loaded" in last
    assert f"to resume from {checkpoints[0]} (the previous checkpoint)" in last
    assert sorted(p.name for p in straight.rglob("*")) == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--max_steps", "abc"), "`max_steps` must be int"),
        (("--temperature", "0"), "`temperature` is 0.0; it must be >= 0.01"),
        (("--baseline", "ppo"), "use one of rloo"),
        (("--samples_per_episode", "1"), "rloo` needs samples_per_episode >= 2"),
        (("--model_name_or_path", "/nonexistent/model"), "cannot load model '/nonexistent/model'"),
        (("--train_fewshot_rules", "sideways"), "holds 'sideways', not a demonstration rule"),
    ],
)
def test_bad_input_is_a_clear_error(tiny_model, small_dataset, tmp_path, extra, message):
    proc = _run([sys.executable, SCRIPT, *_args(tiny_model, small_dataset, tmp_path / "x", *extra)])
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_unwritable_output_and_missing_train_split(tiny_model, small_dataset, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = _run([sys.executable, SCRIPT, *_args(tiny_model, small_dataset, blocker / "out")])
    assert proc.returncode == 2 and "not writable" in proc.stderr

    test_only = tmp_path / "test-only"
    build_dataset(
        test_only,
        [get_config("tasks2_budget0to50")],
        splits=["test"],
        sizes={"test": 2},
        progress=False,
    )
    proc = _run([sys.executable, SCRIPT, *_args(tiny_model, test_only, tmp_path / "y")])
    assert proc.returncode == 2 and "no split 'train'" in proc.stderr, proc.stderr[-2000:]


def test_closing_branches_train_on_the_closing_turn_after_one_history(
    tiny_model, small_dataset, tmp_path
):
    """Two steps with closing branches (K closing turns after one greedy history, the
    history run once per micro batch in the loss), each after another demonstration set:
    the first-step log-prob check passes on the closing tokens and both steps are taken.
    What the branches hold: test_rollout."""
    out = tmp_path / "branches"
    extra = (
        "--max_steps", "2", "--closing_branches", "true", "--samples_per_episode", "3",
        "--micro_batch_size", "3", "--temperature", "1.0", "--sample_every", "1",
        "--eval_every", "2", "--num_fewshot", "1",
        "--train_fewshot_rules", "resume_and_close", "close_open",
    )  # fmt: skip
    proc = _run([sys.executable, SCRIPT, *_args(tiny_model, small_dataset, out, *extra)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "first-step check over" in proc.stdout and ": ok" in proc.stdout
    rows = _log(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["skipped"] is None and math.isfinite(r["loss"]) for r in rows)
    assert [r["shots_set"] for r in rows] == [0, 1]
    assert all(0 <= r["closing_answers"] <= 2 for r in rows)


def test_collapse_guard_stops_and_keeps_the_best_adapter(tiny_model, small_dataset, tmp_path):
    out = tmp_path / "guard"
    extra = ("--max_steps", "6", "--eval_every", "1", "--min_entropy", "100", "--save_every", "0")
    proc = _run([sys.executable, SCRIPT, *_args(tiny_model, small_dataset, out, *extra)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _log(out)
    assert len(rows) == 1 and "entropy" in rows[0]["collapse"]
    assert "collapse guard" in proc.stdout and "stopped:" in proc.stdout
    assert (out / "best" / "adapter_model.safetensors").exists()
    assert (out / "adapter_model.safetensors").exists()
    assert "collapse guard" in (out / "README.md").read_text()


def test_diverging_weights_stop_with_a_clear_error_and_no_adapter(
    tiny_model, small_dataset, tmp_path
):
    out = tmp_path / "diverge"
    extra = (
        "--max_steps",
        "3",
        "--eval_every",
        "0",
        "--learning_rate",
        "1e30",
        "--max_grad_norm",
        "0",
        "--reward_format",
        "1",
        "--baseline",
        "none",
    )
    proc = _run([sys.executable, SCRIPT, *_args(tiny_model, small_dataset, out, *extra)])
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "non-finite logits" in proc.stderr and "without writing an adapter" in proc.stderr
    assert not (out / "adapter_model.safetensors").exists()


def test_collapse_guard_catches_entropy_rising_as_well_as_falling():
    from training.config import parse_config
    from training.validation import collapse_reason

    cfg = parse_config(
        ["--model_name_or_path", "x", "--min_entropy", "0.1", "--max_entropy", "1.5"]
    )
    best = 0.44
    assert collapse_reason({"entropy": 0.6, "val_reward": 0.43}, best, cfg) is None
    assert "rose above max_entropy" in collapse_reason(
        {"entropy": 2.17, "val_reward": 0.44}, best, cfg
    )
    assert "fell below min_entropy" in collapse_reason(
        {"entropy": 0.05, "val_reward": 0.44}, best, cfg
    )


def test_inspect_reattempts_splits_what_the_metric_counts(mini, small_dataset, capsys):
    from training.inspect_reattempts import main as inspect_main

    assert (
        inspect_main(
            [
                "--model",
                str(mini),
                "--dataset_path",
                str(small_dataset),
                "--episodes",
                "4",
                "--samples",
                "2",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 8
    # Every re-attempted task has at least one tag naming it in a later turn.
    assert result["tags_open"] + result["tags_finished"] >= result["reattempts"]
    assert 0.0 <= result["closing_empty"] <= 1.0


@pytest.mark.parametrize(
    "name",
    [
        "llama-3.2-1b.yaml",
        "tiny-cpu.yaml",
        "reference-small-cpu.yaml",
        "smollm2-135m-cpu.yaml",
        "smollm2-135m-easy-cpu.yaml",
        "smollm2-135m-easy-closing-cpu.yaml",
    ],
)
def test_shipped_training_configs_parse_and_validate(name):
    from training.config import parse_config

    path = ROOT / "training" / "configs" / name
    cfg = parse_config(["--config", str(path), "--model_name_or_path", "x"])
    loaded = yaml.safe_load(path.read_text())
    loaded.pop("model_name_or_path", None)  # the flag above overrides it, as it should
    assert {k: getattr(cfg, k) for k in loaded} == {
        k: (float(v) if isinstance(getattr(cfg, k), float) else v) for k, v in loaded.items()
    }


def test_accelerate_launch_quiet_leaves_our_error_last(tiny_model, small_dataset, tmp_path):
    """accelerate launch re-raises a failed worker as CalledProcessError unless given -q;
    with -q the last line a user sees is ours (accelerate's exit code is 1 either way)."""
    cmd = ["accelerate", "launch", "-q", "--cpu", "--num_processes", "1", SCRIPT]
    cmd = [str(Path(sys.executable).parent / cmd[0]), *cmd[1:]]
    proc = _run([*cmd, *_args(tiny_model, small_dataset, tmp_path / "x", "--temperature", "nan")])
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "error: `temperature` is nan; it must be a finite number", proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
