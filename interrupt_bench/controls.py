"""Control conditions on the same episodes, so the cost of interruption is a difference
of two numbers: *nocut* raises every budget to a generous cap; *single* asks each task
alone, in a session of one, with that cap."""

from __future__ import annotations

import dataclasses

from interrupt_bench.episodes import Episode

CONTROL_BUDGET = 256
CONDITIONS = ("interrupted", "nocut", "single")


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


def sessions_for(episode: Episode, condition: str, cap: int = CONTROL_BUDGET) -> list[Episode]:
    """The sessions to replay for one episode under a condition."""
    if condition == "interrupted":
        return [episode]
    if condition == "nocut":
        return [nocut(episode, cap)]
    if condition == "single":
        return single(episode, cap)
    raise ValueError(f"unknown condition {condition!r}; use one of {', '.join(CONDITIONS)}")
