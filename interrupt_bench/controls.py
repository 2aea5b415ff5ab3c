"""Control conditions on the same episodes, so the cost of interruption is a difference
of two numbers: *nocut* raises every budget to a generous cap; *single* asks each task
alone, in a session of one, with that cap. *paired* plays all three for every episode, so
the differences are taken episode by episode (``interrupt_bench.costs``)."""

from __future__ import annotations

import dataclasses
import json

from interrupt_bench.episodes import MAX_BUDGET, Episode
from interrupt_bench.errors import ConfigError

CONTROL_BUDGET = 256
CONDITIONS = ("interrupted", "nocut", "single")
PAIRED = "paired"  # every condition of CONDITIONS on each episode


def check_budget_cap(value: object, where: str = "metadata budget_cap") -> int:
    """The controls' cap as an int, or ConfigError naming ``where`` and the fix.

    The cap is a token count from 1 to ``MAX_BUDGET``: a cap of 0 or below would leave
    every budget as it is (``nocut`` would replay the interrupted session and the
    interruption cost would read 0), and ``true`` is a boolean that ``int()`` reads as 1.
    A whole number written as text (``"256"``) is accepted, as ``int()`` accepted it, and
    so is a float that is a whole number (``256.0``, as JSON and YAML may write it)."""
    cap: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        cap = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and value.strip().lstrip("+-").isdigit()
    ):
        cap = int(value)
    if cap is None or not 1 <= cap <= MAX_BUDGET:
        try:
            shown = json.dumps(value)  # as the user wrote it in JSON or YAML: true, "abc"
        except (TypeError, ValueError):
            shown = repr(value)
        raise ConfigError(
            f"{where} is {shown}; the controls raise every budget to it, so it must be a "
            f"whole number of tokens from 1 to {MAX_BUDGET} (default {CONTROL_BUDGET})"
        )
    return cap


def nocut(episode: Episode, cap: int = CONTROL_BUDGET) -> Episode:
    return dataclasses.replace(
        episode,
        budgets=tuple(max(b, cap) for b in episode.budgets),
        closing_budget=max(episode.closing_budget, cap) if episode.closing_budget else 0,
    )


def single(episode: Episode, cap: int = CONTROL_BUDGET) -> list[Episode]:
    return [
        dataclasses.replace(
            episode,
            episode_id=f"{episode.episode_id}/task{k}",
            budgets=(max(episode.budgets[k - 1], cap),),
            closing_budget=0,
            tasks=(task,),
        )
        for k, task in enumerate(episode.tasks, start=1)
    ]


def labelled_sessions(
    episode: Episode, condition: str, cap: int = CONTROL_BUDGET
) -> list[tuple[str, Episode]]:
    """The sessions to replay for one episode under a condition, each with the condition
    it belongs to (``paired`` gives the interrupted session, the nocut one, then one per
    task). The cap is checked here, so every front end refuses the same values."""
    cap = check_budget_cap(cap, "budget_cap")
    if condition == "interrupted":
        return [("interrupted", episode)]
    if condition == "nocut":
        return [("nocut", nocut(episode, cap))]
    if condition == "single":
        return [("single", s) for s in single(episode, cap)]
    if condition == PAIRED:
        return [pair for c in CONDITIONS for pair in labelled_sessions(episode, c, cap)]
    raise ConfigError(
        f"unknown condition {condition!r}; use one of {', '.join((*CONDITIONS, PAIRED))}"
    )


def sessions_for(episode: Episode, condition: str, cap: int = CONTROL_BUDGET) -> list[Episode]:
    """The sessions to replay for one episode under a condition."""
    return [session for _, session in labelled_sessions(episode, condition, cap)]
