"""The benchmark's two tiers as the commands report them: each tier's Table 1 grid (task
counts, from ``interrupt_bench.config``) and its main config's paired controls task."""

from __future__ import annotations

from interrupt_bench.config import EASY_GRID_TASKS, GRID_TASKS

# tier -> (its grid's task counts, its main config's paired controls task)
TIERS = {
    "default": (GRID_TASKS, "interrupt_bench_controls"),
    "easy": (EASY_GRID_TASKS, "interrupt_bench_easy_controls"),
}


def controls_task(tier: str) -> str:
    """The paired controls task of ``tier``'s main config."""
    return TIERS[tier][1]
