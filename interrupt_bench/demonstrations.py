"""Few-shot demonstrations: whole sessions played by the oracle, shown before the real one.

A pretrained instruct model has never seen the tag protocol; one or two demonstration
sessions teach it the format and, more to the point of the benchmark, show what coming
back to a cut task looks like. Every demonstration is a train-split episode of the same
config, picked by a fixed seed among those whose oracle transcript holds at least one cut
answer and its resumption in a later turn, and cut at its budgets in whitespace tokens
(so the demonstration text is the same for every model).

They come in one of two placements:

- ``turns``: earlier user/assistant chat turns before the real session (lm-eval's
  ``fewshot_as_multiturn`` convention; in plain mode, earlier transcript text);
- ``system``: transcripts inside the system prompt."""

from __future__ import annotations

import random
from collections.abc import Sequence

from interrupt_bench import prompts
from interrupt_bench.dataset import load_episodes
from interrupt_bench.episodes import Episode
from interrupt_bench.errors import DatasetError
from interrupt_bench.policies import policy_responder
from interrupt_bench.session import Transcript, replay
from interrupt_bench.tags import parse_turn

PLACEMENTS = ("turns", "system")
FEWSHOT_SEED = 1234


def shows_resumption(transcript: Transcript) -> bool:
    """Whether a transcript holds a visibly cut answer that a later turn finishes: the cut
    turn shows the whole opening tag and some of the answer (``<answer task=3>dress``).
    A turn cut to nothing, or inside the tag (``<answer``), teaches a model to stop there."""
    for v in transcript.score().verdicts:
        if v.answered_later and not v.answered_in_own_turn:
            spans = parse_turn(transcript.outputs[v.task_id - 1], cut=True).spans
            if any(s.task_id == v.task_id and s.content.strip() for s in spans):
                return True
    return False


def pick(train: Sequence[Episode], k: int, seed: int = FEWSHOT_SEED) -> list[Transcript]:
    """``k`` oracle transcripts of train episodes in a fixed order: those that show a cut
    answer and its resumption first. In a config whose budgets never cut the oracle's
    short answers (budgets 50–200), none can, and the demonstrations show the format only.

    Raises DatasetError (before any model call) when the train split cannot supply ``k``."""
    if k <= 0:
        return []
    if not train:
        raise _no_train_split(k, "missing or empty")
    if k > len(train):
        raise DatasetError(
            f"--num_fewshot {k} is larger than the train split ({len(train)} episodes); "
            f"use at most {len(train)} shots or build a larger train split"
        )
    order = list(train)
    random.Random(seed).shuffle(order)
    showing: list[Transcript] = []
    others: list[Transcript] = []
    for start in range(0, len(order), 64):  # replay in chunks until k show a resumption
        for transcript in replay(order[start : start + 64], policy_responder("oracle"),
                                 system=False):  # fmt: skip
            (showing if shows_resumption(transcript) else others).append(transcript)
        if len(showing) >= k:
            break
    return (showing + others)[:k]


def _no_train_split(k: int, why: str) -> DatasetError:
    return DatasetError(
        f"num_fewshot {k} (--num_fewshot, or the task's default) needs the config's train "
        f"split, which is {why}; build it (`python -m dataset_builder build --split train "
        "...`) or pass --num_fewshot 0"
    )


def from_dataset(
    path: str, config: str, k: int, split: str = "train", seed: int = FEWSHOT_SEED
) -> list[Transcript]:
    """``k`` demonstrations from a dataset's ``split`` of ``config`` (see :func:`pick`); a
    split that cannot be loaded is reported with the reason, before any model call."""
    if k <= 0:
        return []
    try:
        train = load_episodes(path, config, split)
    except DatasetError as exc:
        raise _no_train_split(k, f"missing or cannot be loaded ({exc})") from None
    return pick(train, k, seed)


def as_sessions(transcripts: Sequence[Transcript]) -> list[list[dict[str, str]]]:
    """Each demonstration as chat messages (user/assistant pairs, no system prompt)."""
    return [t.messages(system=False) for t in transcripts]


def with_demonstrations(
    messages: list[dict[str, str]], sessions: Sequence[list[dict[str, str]]], placement: str
) -> list[dict[str, str]]:
    """A real session's messages (system prompt first) with the demonstration sessions
    placed in them: as earlier turns, or as transcripts inside the system prompt."""
    if not sessions:
        return messages
    if placement not in PLACEMENTS:
        raise ValueError(f"fewshot placement must be one of {PLACEMENTS}, got {placement!r}")
    system, rest = messages[0], messages[1:]
    if system["role"] != "system":
        raise ValueError("demonstrations need a session that starts with its system prompt")
    if placement == "system":
        content = prompts.render("demonstrations.j2", system=system["content"], sessions=sessions)
        return [{"role": "system", "content": content}, *rest]
    return [system, *(m for session in sessions for m in session), *rest]
