"""Control conditions on the same episodes, so the cost of interruption is a difference
of two numbers: *nocut* raises every budget to a generous cap; *single* asks each task
alone, in a session of one, with that cap. *paired* plays all three for every episode, so
the differences are taken episode by episode (``interrupt_bench.costs``)."""

from __future__ import annotations

import dataclasses

from interrupt_bench.episodes import Episode

CONTROL_BUDGET = 256
CONDITIONS = ("interrupted", "nocut", "single")
PAIRED = "paired"  # every condition of CONDITIONS on each episode


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
    task)."""
    if condition == "interrupted":
        return [("interrupted", episode)]
    if condition == "nocut":
        return [("nocut", nocut(episode, cap))]
    if condition == "single":
        return [("single", s) for s in single(episode, cap)]
    if condition == PAIRED:
        return [pair for c in CONDITIONS for pair in labelled_sessions(episode, c, cap)]
    raise ValueError(
        f"unknown condition {condition!r}; use one of {', '.join((*CONDITIONS, PAIRED))}"
    )


def sessions_for(episode: Episode, condition: str, cap: int = CONTROL_BUDGET) -> list[Episode]:
    """The sessions to replay for one episode under a condition."""
    return [session for _, session in labelled_sessions(episode, condition, cap)]
