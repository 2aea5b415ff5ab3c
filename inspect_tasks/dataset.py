"""Episodes as Inspect samples, and the demonstration sessions shown before them.

Everything here runs when the task is built, before any model call: a missing dataset,
a corrupt row or a train split too small for the shots ends the run there, with one
line naming the problem and the fix (:class:`InputError`, which Inspect's CLI prints
without a traceback)."""

from __future__ import annotations

from collections.abc import Sequence

from inspect_ai._util.error import PrerequisiteError
from inspect_ai.dataset import MemoryDataset, Sample

from interrupt_bench import demonstrations
from interrupt_bench.dataset import HUB_DATASET_ID, load_episodes
from interrupt_bench.episodes import Episode
from interrupt_bench.errors import InterruptBenchError
from interrupt_bench.session import user_message

Messages = list[dict[str, str]]


class InputError(PrerequisiteError):
    """Bad input (dataset, config, task parameter): Inspect's CLI prints the message as is
    and exits 1, so the user sees one message instead of a traceback (wrapped at the
    terminal's width, ``COLUMNS`` when there is none)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.message)


def episode_sample(episode: Episode) -> Sample:
    """One episode as a sample: the first question as its input (what the model sees
    first), the answers as its target, and the whole row in its metadata (the solver
    plays the session from the row, the scorer scores against it)."""
    return Sample(
        id=episode.episode_id,
        input=user_message(episode, 0),
        target=" | ".join(f"{i}: {t.answer}" for i, t in enumerate(episode.tasks, start=1)),
        metadata={"row": episode.to_row(), "config": episode.config},
    )


def episode_dataset(dataset_path: str | None, config: str, split: str) -> MemoryDataset:
    """The ``split`` of ``config`` from a builder directory (``dataset_path``) or the Hub,
    every row checked as every front end checks it (``interrupt_bench.dataset.
    load_episodes``)."""
    source = dataset_path or HUB_DATASET_ID
    try:
        samples = [episode_sample(e) for e in load_episodes(source, config, split)]
    except InterruptBenchError as exc:
        raise InputError(f"interrupt_bench: {exc}") from None
    if not samples:
        raise InputError(
            f"interrupt_bench: {source} has no episodes in {config}/{split}; build that split "
            "(`python -m dataset_builder build ...`) or pass another -T split="
        )
    return MemoryDataset(samples, name=f"interrupt_bench/{config}/{split}", location=str(source))


def demonstration_sessions(
    dataset_path: str | None,
    config: str,
    num_fewshot: int,
    rule: str = demonstrations.DEFAULT_RULE,
) -> list[Messages]:
    """The ``num_fewshot`` oracle demonstration sessions of ``config``'s train split (the
    ones the lm-eval task picks), as user/assistant messages."""
    if num_fewshot < 0:
        raise InputError(f"interrupt_bench: -T num_fewshot={num_fewshot}; use 0 or more shots")
    try:
        shots = demonstrations.from_dataset(
            dataset_path or HUB_DATASET_ID, config, num_fewshot, rule=rule
        )
    except InterruptBenchError as exc:
        raise InputError(f"interrupt_bench: {exc}") from None
    return demonstrations.as_sessions(shots)


def with_shots(messages: Messages, shots: Sequence[Messages]) -> Messages:
    """A turn's messages with the demonstrations as earlier chat turns after the system
    prompt (lm-eval's placement under ``--apply_chat_template``)."""
    return demonstrations.with_demonstrations(messages, shots, "turns")
