"""The parts of one optimizer step, in the order the loop calls them: this rank's episodes,
rollouts scored and rewarded, advantages, the guarded optimizer step, the step's log row,
validation with the collapse guard, the logs; and the step's wall time by phase."""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch

from interrupt_bench.demonstrations import closed_tasks
from interrupt_bench.episodes import Episode
from interrupt_bench.scoring import aggregate
from training.checkpoints import restore_best
from training.loss import GradientSums
from training.policy import sample_transcripts
from training.rewards import (
    advantages,
    cut_resumed_rate,
    normalise,
    reward,
    tag_credits,
    turn_credit_advantages,
)
from training.state import Run, StepSamples, TrainState
from training.validation import collapse_reason, greedy_metrics


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
    """K sessions per episode (with ``closing_branches``: K closing turns after one greedy
    history), scored and rewarded. Sampling depends on (seed, step, rank) only, so a
    resumed run samples what the uninterrupted one would have."""
    cfg, accelerator = run.cfg, run.accelerator
    k = cfg.samples_per_episode
    t0 = time.perf_counter()
    with accelerator.autocast():
        transcripts, rollouts = sample_transcripts(
            accelerator.unwrap_model(run.model),
            run.tokenizer,
            episodes if cfg.closing_branches else [e for e in episodes for _ in range(k)],
            cfg,
            seed=(cfg.seed * 1_000_003 + step) * 1009 + accelerator.process_index,
            shots=run.shots_at(step),
            vllm=run.vllm,
            closing_branches=k if cfg.closing_branches else 0,
        )
    seconds = time.perf_counter() - t0
    scores = [t.score() for t in transcripts]
    rewards = [reward(s, run.weights, t.cut) for s, t in zip(scores, transcripts)]
    credits = [tag_credits(t.outputs, t.cut, t.episode.n_tasks) for t in transcripts]
    return StepSamples(transcripts, rollouts, scores, rewards, seconds, credits)


def step_advantages(
    run: Run, state: TrainState, samples: StepSamples
) -> tuple[list[float], list[list[float]] | None, float]:
    """Each session's advantage under the configured baseline; with ``tag_credit``, each
    session's per-turn advantages (weighted, for that turn's tokens only; else None); and
    the step's mean reward over all ranks, which also moves the running-mean baseline."""
    cfg, accelerator, rewards = run.cfg, run.accelerator, samples.rewards
    turn_adv = None
    if cfg.tag_credit:
        turn_adv = turn_credit_advantages(
            samples.credits, cfg.tag_credit, cfg.tag_credit_baseline, cfg.samples_per_episode
        )
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
    return adv, turn_adv, batch_mean


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
    right = [cut_resumed_rate(s, t.cut, correct_only=True) for s, t in zip(scores, transcripts)]
    return {
        "step": step,
        "reward": batch_mean,
        "accuracy": batch["accuracy"],
        "reattempts": batch["reattempts"],
        "resumption_rate": batch["resumption_rate"],
        "reattempt_precision": batch["reattempt_precision"],
        "cut_resumption": sum(cut_resumption) / len(scores),
        "cut_resumption_correct": sum(right) / len(scores),
        # per session, all turns: returns to interrupted tasks, minus returns to answered
        # ones and deferrals (training.rewards.tag_credits)
        "tag_credit": sum(map(sum, samples.credits)) / len(scores),
        "format_rate": batch["format_rate"],
        # tasks each closing turn answers (several are open in most sessions)
        "closing_answers": sum(len(closed_tasks(t)) for t in transcripts) / len(transcripts),
        "shots_set": run.shots_set(step),
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
