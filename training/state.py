"""What a training run holds while it runs: :class:`Run`, the objects every phase of a
step uses (built once by ``setup``), and :class:`TrainState`, the few numbers that
change from step to step and that a checkpoint must carry for ``--resume true`` to
continue exactly where the run stopped."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from interrupt_bench.episodes import Episode
from interrupt_bench.scoring import EpisodeScore
from interrupt_bench.session import Transcript
from training.config import TrainConfig
from training.rewards import RewardWeights
from training.rollouts import Rollouts


@dataclass
class TrainState:
    """The trainer's state between steps, saved as ``trainer_state.json`` in every
    checkpoint (these field names, in this order, are that file's keys)."""

    step: int = 0  # optimizer steps taken
    data_pos: int = 0  # where the next step's episodes start in the shuffled train split
    running_mean: float = 0.0  # the running-mean baseline's reward mean
    best_val: float | None = None  # the best validation reward so far (best/ holds it)
    collapse: str | None = None  # why the collapse guard stopped the run, if it did

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        """A checkpoint's ``trainer_state.json``; a file missing a field or holding an
        unknown one raises, so a damaged checkpoint is reported instead of resumed."""
        data = json.loads(text)
        if not isinstance(data, dict) or set(data) != {f.name for f in fields(cls)}:
            raise ValueError(f"trainer_state.json holds {type(data).__name__} {str(data)[:100]}")
        return cls(**data)


@dataclass
class Run:
    """One training run: its config and the objects every phase of a step uses."""

    cfg: TrainConfig
    accelerator: Any
    model: Any
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    train: list[Episode]
    val: list[Episode]
    weights: RewardWeights
    output_dir: Path
    shots: list  # demonstration sessions (chat messages) before every validation session
    train_shots: list  # demonstration sets for training, one a step in turn (shots_at)
    vllm: Any = None  # training.vllm_policy.VllmPolicy with rollout_backend: vllm

    def shots_set(self, step: int) -> int:
        """Which of ``train_shots`` the training sessions of ``step`` (1-based) follow."""
        return (step - 1) % len(self.train_shots)

    def shots_at(self, step: int) -> list:
        """The demonstration sessions the training sessions of ``step`` follow."""
        return self.train_shots[self.shots_set(step)]

    @property
    def log_path(self) -> Path:
        return self.output_dir / "train_log.jsonl"

    def log(self, msg: str) -> None:
        """One ``[reinforce]`` line on the main process's stdout."""
        self.accelerator.print(f"[reinforce] {msg}")

    def append(self, name: str, record: dict) -> None:
        """One JSON line to ``output_dir/name`` (main process only)."""
        if self.accelerator.is_main_process:
            with (self.output_dir / name).open("a") as f:
                f.write(json.dumps(record) + "\n")

    def save_adapter(self, where: Path) -> None:
        """The adapter as a standard peft directory (every rank calls, the main one writes)."""
        self.accelerator.unwrap_model(self.model).save_pretrained(
            where, is_main_process=self.accelerator.is_main_process
        )


@dataclass
class StepSamples:
    """One step's sessions on this rank: transcripts (for the scorer and samples.jsonl),
    the token records the loss trains on, each session's score and reward, the seconds
    sampling took, and each session's per-turn credits (``training.rewards.tag_credits``)."""

    transcripts: list[Transcript]
    rollouts: Rollouts
    scores: list[EpisodeScore]
    rewards: list[float]
    seconds: float
    credits: list[list[float]]
