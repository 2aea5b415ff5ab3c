"""Benchmark configs: how many tasks a session has, the budget interval each question
turn's budget is drawn from, and the closing turn's budget.

``default`` is the benchmark; the ``tasks{N}_budget{LO}to{HI}`` grid mirrors the seed
paper's Table 1 (number of tasks × budget interval). ``easy`` has the default's shape
with task kinds a small instruct model can do alone (copying, comparing, picking from the
question), so that what limits its score is keeping track of tasks, not computing
answers; ``easy_tasks5_budget{LO}to{HI}`` are Table 1's budget intervals at 5 tasks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from interrupt_bench.errors import ConfigError
from interrupt_bench.families import get_family

DEFAULT_FAMILIES = ("math", "translation", "ordering")
EASY_FAMILIES = ("copying", "comparison", "picking")
SPLITS = ("train", "validation", "test")
# Episodes per split for every shipped config.
DEFAULT_SPLIT_SIZES = {"train": 2000, "validation": 200, "test": 500}
GRID_TASKS = (2, 5, 10)
GRID_INTERVALS = ((0, 50), (0, 100), (50, 200))
EASY_GRID_TASKS = (5,)  # the easy tier's grid: Table 1's budget intervals at these sizes


@dataclass(frozen=True)
class EpisodeConfig:
    """Everything that shapes a session besides the seed."""

    name: str
    n_tasks: int = 5
    budget_lo: int = 0
    budget_hi: int = 100
    closing_budget: int = 100
    families: tuple[str, ...] = DEFAULT_FAMILIES
    difficulty: int = 1
    description: str = ""
    split_sizes: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_SPLIT_SIZES))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the field and the fix on any out-of-range value."""
        where = f"config {self.name!r}"
        if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise ConfigError(f"{where}: `name` must be non-empty letters, digits, '_' or '-'")
        for fname in ("n_tasks", "budget_lo", "budget_hi", "closing_budget", "difficulty"):
            value = getattr(self, fname)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{where}: `{fname}` must be an integer, got {value!r}")
        if self.n_tasks < 1:
            raise ConfigError(
                f"{where}: `n_tasks` is {self.n_tasks}; a session needs at least 1 task"
            )
        if self.budget_lo < 0 or self.budget_hi < 0:
            raise ConfigError(
                f"{where}: budget interval [{self.budget_lo}, {self.budget_hi}] is negative; "
                "budgets are token counts, use values >= 0"
            )
        if self.budget_lo > self.budget_hi:
            raise ConfigError(
                f"{where}: budget interval is inverted (budget_lo={self.budget_lo} > "
                f"budget_hi={self.budget_hi}); swap the two values"
            )
        if self.closing_budget < 0:
            raise ConfigError(
                f"{where}: `closing_budget` is {self.closing_budget}; use >= 0 (0 disables "
                "the closing turn)"
            )
        if self.difficulty not in (1, 2, 3):
            raise ConfigError(f"{where}: `difficulty` is {self.difficulty}; use 1, 2 or 3")
        if not self.families:
            raise ConfigError(f"{where}: `families` is empty; name at least one task family")
        for family in self.families:
            get_family(family)
        for split, size in self.split_sizes.items():
            if split not in SPLITS:
                raise ConfigError(f"{where}: unknown split {split!r}; use one of {SPLITS}")
            if not isinstance(size, int) or size < 0:
                raise ConfigError(f"{where}: size of split {split!r} must be >= 0, got {size!r}")

    @property
    def has_closing_turn(self) -> bool:
        return self.closing_budget > 0

    def replace(self, **changes: Any) -> EpisodeConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_tasks": self.n_tasks,
            "budget_lo": self.budget_lo,
            "budget_hi": self.budget_hi,
            "closing_budget": self.closing_budget,
            "families": list(self.families),
            "difficulty": self.difficulty,
        }


def grid_config_name(n_tasks: int, lo: int, hi: int, tier: str = "") -> str:
    """``tasks5_budget0to50``; with a tier, ``easy_tasks5_budget0to50``."""
    return f"{tier + '_' if tier else ''}tasks{n_tasks}_budget{lo}to{hi}"


def _shipped_configs() -> dict[str, EpisodeConfig]:
    configs = {
        "default": EpisodeConfig(
            "default",
            description="The benchmark: 5 tasks, budgets 0–100 tokens, closing budget 100.",
        )
    }
    for n_tasks in GRID_TASKS:
        for lo, hi in GRID_INTERVALS:
            name = grid_config_name(n_tasks, lo, hi)
            configs[name] = EpisodeConfig(
                name,
                n_tasks=n_tasks,
                budget_lo=lo,
                budget_hi=hi,
                description=f"Table 1 grid: {n_tasks} tasks, budgets {lo}–{hi} tokens.",
            )
    configs["easy"] = EpisodeConfig(
        "easy",
        families=EASY_FAMILIES,
        description="The easy tier: the default's shape (5 tasks, budgets 0–100, closing "
        "budget 100) with copying, comparison and picking tasks.",
    )
    for n_tasks in EASY_GRID_TASKS:
        for lo, hi in GRID_INTERVALS:
            name = grid_config_name(n_tasks, lo, hi, tier="easy")
            configs[name] = EpisodeConfig(
                name,
                n_tasks=n_tasks,
                budget_lo=lo,
                budget_hi=hi,
                families=EASY_FAMILIES,
                description=f"Easy tier, Table 1 grid: {n_tasks} tasks, budgets {lo}–{hi} tokens.",
            )
    return configs


CONFIGS: dict[str, EpisodeConfig] = _shipped_configs()


def get_config(name: str) -> EpisodeConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ConfigError(
            f"unknown config {name!r}; shipped configs: {', '.join(CONFIGS)}"
        ) from None


def families_of(name: str) -> tuple[str, ...]:
    """The task families of a config by name: a shipped config's own, else the default's
    (a custom config's rows name their families task by task, not as a set)."""
    config = CONFIGS.get(name)
    return config.families if config is not None else DEFAULT_FAMILIES
