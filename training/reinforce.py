"""REINFORCE + LoRA on interrupted sessions.

    accelerate launch training/reinforce.py --config training/configs/llama-3.2-1b.yaml
    accelerate launch --cpu training/reinforce.py --config training/configs/tiny-cpu.yaml \
        --model_name_or_path DIR --dataset_path DATA

Each step: sample K sessions per episode from the train split (the same replay loop and
scorer as the lm-eval tasks), score them, turn scores into rewards and advantages (RLOO by
default), and take one policy-gradient step on the tokens the model sampled, normalised
over all tokens of the step. The adapter lands in ``output_dir`` as a standard peft
directory: ``lm_eval --model hf --model_args pretrained=BASE,peft=OUTPUT_DIR ...``.

This file reads top to bottom as a run does: :func:`main`, :func:`train` (setup, the
steps, the finish), then the loop (:func:`run_steps`, one numbered phase per part of a
step). Setup and resume live in ``training/run_setup.py``, each phase of a step in
``training/step_parts.py``, the loss in ``training/loss.py``, the finish and the interrupt
report in ``training/finish.py``, checkpoints and the output directory in
``training/checkpoints.py``, validation and the collapse guard in
``training/validation.py``, the run's objects and state in ``training/state.py``.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time
from contextlib import ExitStack
from typing import Any

import torch

from interrupt_bench.errors import InterruptBenchError
from training.checkpoints import save_checkpoint
from training.config import parse_config
from training.finish import finish, interrupted
from training.loss import policy_gradient
from training.run_setup import mixed_precision, setup, start_or_resume
from training.state import Run, TrainState
from training.step_parts import (
    guarded_step,
    log_step,
    next_episodes,
    phase_seconds,
    sample_step,
    step_advantages,
    step_record,
    validate,
)

__all__ = ["main", "mixed_precision", "train"]  # the console script, tests


def main(argv: list[str] | None = None) -> int:
    """The command: exit 0 when the adapter is written, 2 when the run cannot start, 3
    when a step is not finite, 128 + the signal when interrupted."""
    # A hung run (a stuck collective, a dead peer) shows where it waits: `kill -USR1 PID`
    # dumps every thread's stack, and INTERRUPT_BENCH_TRACEBACK_AFTER=SECONDS does so once.
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    if os.environ.get("INTERRUPT_BENCH_TRACEBACK_AFTER"):
        faulthandler.dump_traceback_later(float(os.environ["INTERRUPT_BENCH_TRACEBACK_AFTER"]))
    signal.signal(signal.SIGTERM, _stop)
    try:
        return train(argv)
    except FloatingPointError as exc:
        print(
            f"error: {exc}. Training stopped without writing an adapter; checkpoints written "
            "before this step are intact (--resume true continues from the newest).",
            file=sys.stderr,
        )
        return 3


def train(argv: list[str] | None = None) -> int:
    """Setup, the steps, the finish, with the output_dir locked throughout; an interrupt
    at any point is reported with what was kept."""
    try:
        cfg = parse_config(argv)
    except InterruptBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run: Run | None = None
    state: TrainState | None = None
    with ExitStack() as held:  # the output_dir's lock, held until the run ends
        try:
            run = setup(cfg, held)
            state = start_or_resume(run)
        except InterruptBenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            return interrupted(exc, cfg, run, state)
        try:
            run_steps(run, state)
            finish(run, state)
        except KeyboardInterrupt as exc:
            return interrupted(exc, cfg, run, state)
    return 0


# --------------------------------------------------------------------------------------
# The loop


def run_steps(run: Run, state: TrainState) -> None:
    """The optimizer steps from ``state.step`` to ``max_steps`` (or the collapse guard's
    stop), updating ``state`` as each one ends."""
    from tqdm.auto import tqdm

    cfg, accelerator = run.cfg, run.accelerator
    order = torch.randperm(len(run.train), generator=torch.Generator().manual_seed(cfg.seed))
    order = order.tolist()
    bar = tqdm(
        range(state.step, cfg.max_steps),
        initial=state.step,
        total=cfg.max_steps,
        desc="reinforce",
        disable=not accelerator.is_local_main_process,
    )
    with bar:  # closed (its line ended) before an interrupt is reported
        for step in bar:
            t_step = time.perf_counter()
            # 1. Rollouts: this rank's episodes, each K times, on the session engine; scores
            #    and rewards.
            samples = sample_step(run, next_episodes(run, state, order), step)

            # 2. Advantages, and the step's mean reward over all ranks.
            adv, turn_adv, batch_mean = step_advantages(run, state, samples)

            # 3. Policy gradient on the sampled tokens, normalised over every token of the step.
            check = step == 0 and cfg.check_logprobs
            t_loss = time.perf_counter()
            sums = policy_gradient(run, samples.rollouts.sessions, adv, check, turn_adv)

            # 4. One optimizer step, unless the loss or gradient is not finite.
            t_optim = time.perf_counter()
            grad_norm, skipped = guarded_step(run, sums.loss, step)
            state.step = step + 1

            # 5. Logs, validation with the collapse guard, samples, checkpoints.
            t_val = time.perf_counter()
            record = step_record(run, state.step, samples, batch_mean, sums, grad_norm, skipped)
            if cfg.eval_every and state.step % cfg.eval_every == 0:
                validate(run, state, record)
            record.update(
                phase_seconds(t_step, samples.seconds, t_loss, t_optim, t_val, time.perf_counter()),
                reference_s=round(sums.reference_seconds, 3),
                loss_tokens=sums.forward_tokens,
                loss_padded_tokens=sums.padded_tokens,
            )
            log_step(run, samples, record)
            bar.set_postfix(
                reward=f"{batch_mean:.3f}",
                acc=f"{record['accuracy']:.3f}",
                ent=f"{record['entropy']:.2f}",
            )
            if cfg.save_every and state.step % cfg.save_every == 0:
                save_checkpoint(accelerator, run.output_dir, state, cfg.save_total_limit)
            if state.collapse:
                break


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so the lock is released and the interrupt reported.
    Later SIGTERMs are ignored while that report is written: ``pkill`` reaches both
    ``accelerate launch`` and its worker, and the launcher passes its own on, so a worker
    gets two, and a second one inside the handler would end it with a traceback."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":
    raise SystemExit(main())
