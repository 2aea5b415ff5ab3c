"""Training runs that race or mix into one another's ``--output_dir``: a fresh run into a
used directory, a resume with another run's shape, two runs at once and a SIGTERM each
end in one line that names what happened and the fix.

Every run here is the real ``training/reinforce.py`` on the tiny model, one or two steps of
two episodes; the SIGTERM test goes through the real ``accelerate launch -q``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT
from .test_training import SCRIPT, _args, _log, _run

SHORT = ("--eval_every", "0", "--save_every", "1", "--episodes_per_step", "1", "--cpu_threads", "1")


def _train(model, data, out, *extra) -> subprocess.CompletedProcess:
    return _run([sys.executable, SCRIPT, *_args(model, data, out, *SHORT, *extra)], timeout=300)


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def _snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``out`` with its size and modification time: "nothing changed"."""
    return {
        str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tiny_model, small_dataset, tmp_path_factory) -> Path:
    """A two-step run with a checkpoint after each step (lora_r 8, the tiny config's)."""
    out = tmp_path_factory.mktemp("runs") / "old"
    proc = _train(tiny_model, small_dataset, out, "--max_steps", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture
def used_dir(finished_run, tmp_path) -> Path:
    """A copy of the finished run that a test may change."""
    return Path(shutil.copytree(finished_run, tmp_path / "used"))


def test_fresh_run_into_a_used_output_dir_is_refused_naming_the_flag(
    tiny_model, small_dataset, used_dir
):
    before = _snapshot(used_dir)
    proc = _train(tiny_model, small_dataset, used_dir, "--max_steps", "1")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = _last_line(proc)
    assert last.startswith(f"error: output_dir {used_dir} holds another training run"), last
    assert "--overwrite_output_dir true" in last and "--resume true" in last, last
    assert _snapshot(used_dir) == before


def test_overwrite_output_dir_starts_a_new_run_without_the_old_ones_files(
    tiny_model, small_dataset, used_dir
):
    proc = _train(
        tiny_model, small_dataset, used_dir, "--max_steps", "1", "--learning_rate", "0.05",
        "--overwrite_output_dir", "true",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Rotation kept the new run's own checkpoint, not the old run's step 2.
    assert [c.name for c in (used_dir / "checkpoints").iterdir()] == ["step-0000001"]
    assert [r["step"] for r in _log(used_dir)] == [1]
    assert json.loads((used_dir / "train_config.json").read_text())["learning_rate"] == 0.05


def test_resume_with_another_run_shape_names_the_changed_fields(
    tiny_model, small_dataset, used_dir
):
    """A changed --lora_r is a changed config, not a corrupt checkpoint."""
    before = _snapshot(used_dir)
    proc = _train(
        tiny_model, small_dataset, used_dir, "--max_steps", "3", "--resume", "true",
        "--lora_r", "4", "--dataset_config", "default",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = _last_line(proc)
    assert "holds a run with another config" in last, last
    assert "lora_r 8, now 4" in last and "dataset_config tasks2_budget0to50, now default" in last
    assert "--overwrite_output_dir true" in last
    assert "cannot be loaded" not in proc.stderr and "move it away" not in proc.stderr
    assert _snapshot(used_dir) == before

    # Without the run's train_config.json (deleted, or a run from before the check), the
    # checkpoint's own shapes tell: the message says the config changed, not "corrupt".
    (used_dir / "train_config.json").unlink()
    before = _snapshot(used_dir)
    proc = _train(tiny_model, small_dataset, used_dir, "--max_steps", "3", "--resume", "true",
                  "--lora_r", "4")  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = _last_line(proc)
    assert "was written by a run with another model or LoRA shape (size mismatch" in last, last
    assert "move it away" not in last and "--overwrite_output_dir true" in last, last
    assert _snapshot(used_dir) == before


def test_resume_with_another_reward_records_what_the_earlier_steps_trained_with(
    tiny_model, small_dataset, used_dir
):
    """train_config.json holds the newest values; config_changes.jsonl keeps the old ones,
    with the step they were replaced after, and the adapter's card says so. A second
    resume with the same values records nothing more."""
    extra = ("--resume", "true", "--reward_format", "0.5")
    proc = _train(tiny_model, small_dataset, used_dir, "--max_steps", "3", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "recorded in config_changes.jsonl" in proc.stdout
    records = _log(used_dir, "config_changes.jsonl")
    assert records == [{"step": 2, "changes": {"max_steps": [2, 3], "reward_format": [0.0, 0.5]}}]
    assert json.loads((used_dir / "train_config.json").read_text())["reward_format"] == 0.5
    card = (used_dir / "README.md").read_text()
    assert "- from step 3: `max_steps` 2 → 3; `reward_format` 0.0 → 0.5" in card, card

    proc = _train(tiny_model, small_dataset, used_dir, "--max_steps", "3", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _log(used_dir, "config_changes.jsonl") == records


def test_a_checkpoint_exports_as_the_adapter_it_held_and_a_new_run_starts_from_it(
    tiny_model, small_dataset, finished_run, tmp_path
):
    """``training.export_checkpoint`` turns the step-2 checkpoint into the peft adapter
    the run wrote at step 2 (tensor for tensor); ``--init_adapter`` starts a new run from
    it, and its card says so. A folder that is not a checkpoint is named."""
    from safetensors.torch import load_file

    from training.export_checkpoint import export

    exported = export(finished_run / "checkpoints" / "step-0000002", tmp_path / "step2")
    mine = load_file(str(exported / "adapter_model.safetensors"))
    final = load_file(str(finished_run / "adapter_model.safetensors"))
    assert mine.keys() == final.keys() and all(bool((mine[k] == final[k]).all()) for k in mine)
    assert json.loads((exported / "checkpoint.json").read_text())["step"] == 2

    out = tmp_path / "from_step2"
    proc = _train(tiny_model, small_dataset, out, "--max_steps", "1", "--init_adapter", exported)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = (out / "README.md").read_text()
    assert f"The adapter started from the weights of `{exported}`" in card, card
    with pytest.raises(SystemExit, match="pass a checkpoint folder"):
        export(finished_run, tmp_path / "nothing")


def test_resume_and_overwrite_together_are_refused():
    from interrupt_bench.errors import ConfigError
    from training.config import parse_config

    with pytest.raises(ConfigError, match="`resume` and `overwrite_output_dir` cannot both"):
        parse_config(["--model_name_or_path", "m", "--resume", "true",
                      "--overwrite_output_dir", "true"])  # fmt: skip


def test_every_reward_weight_zero_is_refused_before_anything_runs(tmp_path, capsys):
    """A constant reward trains nothing (loss 0, gradient 0) yet saves an adapter: refused
    in config validation with one line, before the output_dir or a model is touched."""
    from interrupt_bench.errors import ConfigError
    from training.config import parse_config
    from training.reinforce import train

    message = "every reward weight is 0 (reward_accuracy, reward_reattempts, "
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(["--model_name_or_path", "m", "--reward_accuracy", "0"])
    out = tmp_path / "out"
    assert train(["--model_name_or_path", "m", "--output_dir", str(out),
                  "--reward_accuracy", "0.0", "--reward_reattempts", "0"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "--reward_accuracy 1" in err[0], err
    assert not out.exists()
    # one weight, of any term and sign, is a reward that varies
    parse_config(["--model_name_or_path", "m", "--reward_accuracy", "0", "--reward_format", "-1"])


def test_a_second_run_into_a_busy_output_dir_is_refused_naming_the_holder(
    tiny_model, small_dataset, tmp_path
):
    out = tmp_path / "busy"
    lock = out.parent / f".{out.name}.lock"
    first = subprocess.Popen(
        [sys.executable, SCRIPT, *_args(tiny_model, small_dataset, out, *SHORT,
                                        "--max_steps", "200")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 240
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.time() < deadline, "first run took no lock"
            time.sleep(0.1)
        second = _train(tiny_model, small_dataset, out, "--max_steps", "1")
        assert first.poll() is None, "the first run ended before the second was refused"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert second.returncode == 2, second.stderr[-3000:]
    assert "Traceback" not in second.stderr
    last = _last_line(second)
    assert last.startswith(f"error: output_dir {out} is in use by process {first.pid}"), last
    assert "another --output_dir" in last, last


def test_sigterm_during_training_says_what_was_kept_and_how_to_resume(
    tiny_model, small_dataset, tmp_path
):
    """SIGTERM to `accelerate launch -q --cpu` and its worker at once, as ``pkill`` or a
    job scheduler sends it: the worker gets its own and the one the launcher passes on,
    and the second must not cut the report short."""
    out = tmp_path / "term"
    accelerate = str(Path(sys.executable).parent / "accelerate")
    cmd = [accelerate, "launch", "-q", "--cpu", SCRIPT,
           *_args(tiny_model, small_dataset, out, *SHORT)]  # fmt: skip
    launcher = subprocess.Popen(
        [*cmd, "--max_steps", "200"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        while not (out / "checkpoints" / "step-0000001").exists():
            assert launcher.poll() is None and time.time() < deadline, "no first checkpoint"
            time.sleep(0.1)
        os.killpg(launcher.pid, signal.SIGTERM)
        _, err = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert launcher.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    kept = sorted((out / "checkpoints").glob("step-*[0-9]"))[-1]
    step = int(kept.name.removeprefix("step-"))
    assert last.startswith("interrupted (SIGTERM) after "), last
    assert f"kept checkpoint {kept} (step {step})" in last, last
    assert f"run the same command with --resume true to continue from step {step}" in last

    # The advice works: the same command with --resume true continues from that checkpoint.
    resumed = _run([*cmd, "--max_steps", str(step + 1), "--resume", "true"], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {kept} (step {step})" in resumed.stdout
    assert [r["step"] for r in _log(out)] == list(range(1, step + 2))
