"""Checkpoints and the output directory they live in.

One run per ``output_dir``: :func:`claim_output_dir` locks it and refuses a directory
that holds another run (rotation would delete that run's checkpoints, ``--resume true``
would continue it), unless ``--overwrite_output_dir true`` clears it first.
:func:`save_checkpoint` writes accelerate's state plus :class:`~training.state.TrainState`
under a temporary name and renames it, so a kill never leaves half a checkpoint, and
keeps the newest ``save_total_limit``; :func:`resume` loads the newest one and cuts the
logs (``train_log.jsonl``, ``samples.jsonl``) back to its step. ``best/`` holds the
adapter with the best validation reward, which the collapse guard restores
(:func:`restore_best`).
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from interrupt_bench.errors import InterruptBenchError
from interrupt_bench.locking import DirectoryInUse, exclusive
from training.config import RUN_SHAPE, TrainConfig, shape_changes
from training.state import Run, TrainState


class SetupError(InterruptBenchError):
    """The run cannot start (unwritable output, unloadable checkpoint): exit code 2."""


# What a run writes in output_dir, and --overwrite_output_dir deletes before a new one.
RUN_OUTPUTS = (
    "checkpoints",
    "best",
    "train_log.jsonl",
    "samples.jsonl",
    "train_config.json",
    "adapter_model.safetensors",
    "adapter_config.json",
    "training_curves.png",
    "config_changes.jsonl",
    "reinforce",  # the TensorBoard logs
)


def make_output_dir(output_dir: Path) -> None:
    """Create ``output_dir`` and prove every process can write there before any model is
    loaded, so a wrong path fails in seconds with the flag to change."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{os.getpid()}"  # one per process: ranks race
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise SetupError(
            f"output_dir {output_dir} is not writable ({exc.strerror}); choose another --output_dir"
        ) from None


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """The finished checkpoints, oldest first (``.partial`` ones are not finished)."""
    return sorted((output_dir / "checkpoints").glob("step-[0-9]*[0-9]"))


def previous_run(output_dir: Path) -> list[str]:
    """What a training run left in ``output_dir``, for the refusal to name (empty: none)."""
    found = []
    if (output_dir / "train_config.json").exists():
        found.append("train_config.json")
    if n := len(checkpoint_dirs(output_dir)):
        found.append(f"{n} checkpoint(s)")
    log = output_dir / "train_log.jsonl"
    if log.exists() and log.stat().st_size:
        found.append("train_log.jsonl")
    if (output_dir / "adapter_model.safetensors").exists():
        found.append("an adapter")
    return found


def check_output_dir(cfg: TrainConfig, output_dir: Path) -> None:
    """One run per output_dir: a fresh run into a directory holding another is refused
    (rotation would delete its own checkpoints, --resume would continue the other run),
    unless ``overwrite_output_dir`` clears that run first; a resume whose model, LoRA
    shape or data differ from the run it continues is refused, naming the fields."""
    if cfg.overwrite_output_dir:
        for name in RUN_OUTPUTS:
            path = output_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        return
    found = previous_run(output_dir)
    if found and not cfg.resume:
        raise SetupError(
            f"output_dir {output_dir} holds another training run ({', '.join(found)}); pass "
            "--resume true to continue it, --overwrite_output_dir true to replace it, or "
            "choose another --output_dir. Nothing was changed."
        )
    saved_path = output_dir / "train_config.json"
    if cfg.resume and saved_path.exists():
        try:
            saved = json.loads(saved_path.read_text())
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise SetupError(
                f"{saved_path} cannot be read ({exc}); it records the run --resume true "
                "continues: restore it, or start over with --overwrite_output_dir true"
            ) from None
        changes = shape_changes(saved, cfg)
        if changes:
            raise SetupError(
                f"--resume true: output_dir {output_dir} holds a run with another config "
                f"({'; '.join(changes)}); resume with that run's values, or start a new run "
                "with --overwrite_output_dir true or another --output_dir. Nothing was changed."
            )
    if cfg.resume and checkpoint_dirs(output_dir):
        for name in STEP_LOGS:  # a damaged log is named now, before the model loads
            read_step_log(output_dir / name)


def claim_output_dir(cfg: TrainConfig, accelerator: Any, output_dir: Path, held: ExitStack) -> None:
    """Lock output_dir for the whole run (``held`` releases it) and check what it holds;
    the main process decides and every process raises the same :class:`SetupError`."""
    problem = None
    if accelerator.is_main_process:
        try:
            held.enter_context(
                exclusive(output_dir, "output_dir", fix="or choose another --output_dir")
            )
            check_output_dir(cfg, output_dir)
        except (DirectoryInUse, SetupError) as exc:
            problem = str(exc)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        problem = broadcast_object_list([problem])[0]
    if problem:
        raise SetupError(problem)


def save_checkpoint(accelerator: Any, output_dir: Path, state: TrainState, limit: int) -> None:
    """accelerate state (adapter and model, optimizer, scheduler, RNG) plus the trainer
    state, written to a temporary name and renamed, so a kill never leaves half a
    checkpoint; then only the newest ``limit`` checkpoints are kept."""
    final = output_dir / "checkpoints" / f"step-{state.step:07d}"
    tmp = final.with_name(final.name + ".partial")
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(asdict(state), indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(output_dir)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def resume(run: Run) -> TrainState:
    """Load the newest checkpoint into the run's model, optimizer, scheduler and RNGs, and
    cut ``train_log.jsonl`` and ``samples.jsonl`` back to its step (the steps after it are
    taken again, and written again). A checkpoint that does not load is named with what to
    do instead; so is a log line that is not a step's record, except a cut-off last line
    (a write a kill or a full disk stopped), which is dropped with a warning."""
    latest = checkpoint_dirs(run.output_dir)[-1]
    logs = {}
    if run.accelerator.is_main_process:  # every log read before anything is loaded or cut
        logs = {
            path: read_step_log(path)
            for path in (run.output_dir / name for name in STEP_LOGS)
            if path.exists()
        }
    try:
        run.accelerator.load_state(str(latest))
        state = TrainState.from_json((latest / "trainer_state.json").read_text())
    except Exception as exc:  # a truncated or edited checkpoint: name it, offer the rest
        raise _unloadable(latest, exc, checkpoint_dirs(run.output_dir)[:-1]) from None
    run.log(f"resumed from {latest} (step {state.step})")
    for path, (records, torn) in logs.items():  # drop later steps
        if torn:
            run.log(
                f"warning: {path} ends in a cut-off line (a write that did not finish: "
                f"{torn[:80]!r}); dropped it"
            )
        kept = [line for step, line in records if step <= state.step]
        path.write_text("".join(line + "\n" for line in kept))
    return state


# The logs a run appends one JSON record per line to, each with its "step".
STEP_LOGS = ("train_log.jsonl", "samples.jsonl", "config_changes.jsonl")

# Fields that say how or where a run was started, not what it trains (a run folder copied
# elsewhere and resumed there is the same run).
_HOW_STARTED = ("resume", "overwrite_output_dir", "output_dir")


def config_changes(saved: dict[str, Any], cfg: TrainConfig) -> dict[str, list[Any]]:
    """The fields a resumed run sets otherwise than the run it continues (``saved``, its
    ``train_config.json``), each as [old, new]: a reward, a learning rate or ``max_steps``
    changed on ``--resume true``. ``train_config.json`` holds the newest values only, so
    these records are the run's only account of what its earlier steps trained with. A
    field the saved run does not name (one newer than that run) had its default there.
    The run's shape is :func:`training.config.shape_changes`' to check (a resume that
    changes it is refused; one that names a model's directory by another path is not), so
    it is left out here."""
    defaults = asdict(TrainConfig())
    old = {name: saved.get(name, defaults[name]) for name in defaults}
    return {
        name: [old[name], value]
        for name, value in asdict(cfg).items()
        if name not in _HOW_STARTED and name not in RUN_SHAPE and old[name] != value
    }


def record_config_changes(output_dir: Path, cfg: TrainConfig, step: int) -> dict[str, list[Any]]:
    """Append to ``config_changes.jsonl`` what a run resumed at ``step`` changes (nothing
    when it changes nothing); call it before ``train_config.json`` is overwritten."""
    saved_path = output_dir / "train_config.json"
    if not saved_path.exists():
        return {}
    changes = config_changes(json.loads(saved_path.read_text()), cfg)
    if changes:
        with (output_dir / "config_changes.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, "changes": changes}) + "\n")
    return changes


def read_step_log(path: Path) -> tuple[list[tuple[int, str]], str]:
    """Each record of a step log (``train_log.jsonl``, ``samples.jsonl``) with its step,
    and the last line when it is cut off (a torn write: a kill or a full disk stopped
    it; "" when none). A line in the middle that is not a record with a step raises
    :class:`SetupError` naming the file and the line."""
    if not path.exists():
        return [], ""
    lines = path.read_text(errors="replace").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            if i == last:  # cut off mid-record: the write never finished
                return records, line
            raise _bad_log_line(path, i, str(exc)) from None
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, bool) or not isinstance(step, int):
            raise _bad_log_line(path, i, f"step is {step!r}" if step is not None else "no step")
        records.append((step, line))
    return records, ""


def _bad_log_line(path: Path, i: int, why: str) -> SetupError:
    return SetupError(
        f"{path} line {i + 1} is not a step's JSON record ({why[:120]}); --resume true cuts "
        "this log back to the checkpoint's step: repair or delete that line, or start over "
        "with --overwrite_output_dir true. Nothing was changed."
    )


def _unloadable(latest: Path, exc: Exception, earlier: list[Path]) -> SetupError:
    """Why checkpoint ``latest`` cannot continue the run, and the way out: another run's
    shapes (every checkpoint fails alike) or damage (an ``earlier`` one may load)."""
    if "size mismatch" in str(exc):
        return SetupError(
            f"checkpoint {latest} was written by a run with another model or LoRA "
            f"shape ({_first_mismatch(exc)}); resume with that run's --model_name_or_"
            "path and --lora_* values, or start a new run with --overwrite_output_dir "
            "true or another --output_dir. Nothing was changed."
        )
    offer = (
        f"move it away to resume from {earlier[-1]} (the previous checkpoint)"
        if earlier
        else "no earlier checkpoint is kept: --overwrite_output_dir true starts over"
    )
    return SetupError(
        f"checkpoint {latest} cannot be loaded ({type(exc).__name__}: "
        f"{str(exc)[:200]}); {offer}. Nothing was changed."
    )


def _first_mismatch(exc: Exception) -> str:
    """The first "size mismatch for NAME: ..." line of a state-dict load error."""
    lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln]
    return (lines[0] if lines else str(exc).splitlines()[0])[:300]


def restore_best(run: Run) -> None:
    """Load the best adapter's weights back into the model (stop or rollback), on every
    rank, so the ranks keep one model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    run.accelerator.wait_for_everyone()
    path = run.output_dir / "best" / "adapter_model.safetensors"
    if path.exists():
        set_peft_model_state_dict(run.accelerator.unwrap_model(run.model), load_file(str(path)))
