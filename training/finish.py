"""How a run ends: finished (the adapter at output_dir, the curves, the card, the push), or
interrupted (one line saying what was kept and the command that continues it)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from dataclasses import asdict
from pathlib import Path

from training.checkpoints import checkpoint_dirs
from training.config import TrainConfig
from training.report import plot_curves, write_adapter_card
from training.state import Run, TrainState
from training.validation import greedy_metrics


def finish(run: Run, state: TrainState) -> None:
    """The adapter at ``output_dir`` itself, the curves, the model card, the push."""
    cfg, accelerator, output_dir = run.cfg, run.accelerator, run.output_dir
    accelerator.wait_for_everyone()
    final = greedy_metrics(run) if cfg.eval_every else {}
    run.save_adapter(output_dir)
    if run.vllm is not None:
        shutil.rmtree(run.vllm.adapter_dir, ignore_errors=True)  # the rollout copies
    if accelerator.is_main_process:
        run.tokenizer.save_pretrained(output_dir)
        plot_curves(run.log_path, output_dir / "training_curves.png")
        write_adapter_card(output_dir, cfg, final, asdict(state))
        run.log(
            f"adapter saved to {output_dir} after {state.step} steps"
            + (f" (stopped: {state.collapse})" if state.collapse else "")
        )
        if cfg.push_to_hub:
            from huggingface_hub import HfApi

            HfApi().upload_folder(
                folder_path=str(output_dir),
                repo_id=cfg.push_to_hub,
                ignore_patterns=["checkpoints/*"],
                commit_message="interrupt-bench REINFORCE adapter",
            )
    accelerator.end_training()
    if accelerator.num_processes > 1:
        # Freeing the DDP model joins gloo's worker threads while holding the GIL; a worker
        # still releasing its last collective needs the GIL too, and both wait forever
        # (pytorch/pytorch#56297; one run in a few dozen hung here after saving). Everything
        # is written and the process group is destroyed, so leave without the destructors.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def interrupted(
    exc: KeyboardInterrupt, cfg: TrainConfig, run: Run | None, state: TrainState | None
) -> int:
    """Say, in one line, what an interrupted run (SIGTERM from a scheduler, Ctrl-C) kept in
    output_dir and the command that continues it; the exit code is 128 + the signal."""
    name = str(exc) or "SIGINT"
    code = 128 + (signal.Signals[name].value if name in signal.Signals.__members__ else 2)
    if run is not None and not run.accelerator.is_main_process:
        return code
    output_dir = Path(cfg.output_dir)
    again = "run the same command with --resume true" + (
        " (and without --overwrite_output_dir)" if cfg.overwrite_output_dir else ""
    )
    if state is None:
        print(
            f"interrupted ({name}) before training began: no step was taken in {output_dir}; "
            f"{again} to start it",
            file=sys.stderr,
        )
        return code
    kept = checkpoint_dirs(output_dir)
    done = f"interrupted ({name}) after {state.step} of {cfg.max_steps} steps"
    best = output_dir / "best"
    best_note = f"; the best adapter so far is in {best}" if best.is_dir() else ""
    if kept:
        step = int(kept[-1].name.removeprefix("step-"))
        print(
            f"{done}: kept checkpoint {kept[-1]} (step {step}){best_note}; later steps are "
            f"lost; {again} to continue from step {step}",
            file=sys.stderr,
        )
    else:
        every = f"every {cfg.save_every} steps" if cfg.save_every else "only at the end"
        print(
            f"{done}: no checkpoint was written yet (save_every: {every}){best_note}; "
            f"{again} to start over",
            file=sys.stderr,
        )
    return code
