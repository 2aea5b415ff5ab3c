"""Episodes: a seeded session of questions with one token budget per turn.

An episode is a pure function of (config, split, index, base seed, generator version).
Its row form is what the dataset stores; :meth:`Episode.from_row` checks a row and says
which field is wrong when a file is corrupt or from another schema."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from interrupt_bench.checkers import CHECKERS
from interrupt_bench.config import CONFIGS, SPLITS, EpisodeConfig
from interrupt_bench.errors import DatasetError
from interrupt_bench.families import get_family
from interrupt_bench.schema import ROW_FIELDS
from interrupt_bench.tasks import FAMILIES, Task

# Bump when a change to generation alters any row for the same seed.
# 1.1.0: no question shows its answer (ordering lists never already in the asked order;
# math and translation questions never show a number or word accepted as the answer).
GENERATOR_VERSION = "1.1.0"
# The episode seeds' namespace, frozen at the first release: a generator change redraws
# only the episodes it touches; the others keep their seeds, budgets and tasks.
_SEED_NAMESPACE = "interrupt-bench|1.0.0"
DEFAULT_SEED = 1234
_MAX_DUPLICATE_RETRIES = 50


@dataclass(frozen=True)
class Episode:
    episode_id: str
    config: str
    split: str
    index: int
    seed: int
    generator_version: str
    budgets: tuple[int, ...]
    closing_budget: int
    tasks: tuple[Task, ...]

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def n_turns(self) -> int:
        """Assistant turns: one per question, plus the closing turn when its budget > 0."""
        return self.n_tasks + (1 if self.closing_budget > 0 else 0)

    def turn_budgets(self) -> list[int]:
        return list(self.budgets) + ([self.closing_budget] if self.closing_budget > 0 else [])

    def to_row(self) -> dict[str, Any]:
        """The dataset row (columns in :data:`interrupt_bench.schema.ROW_COLUMNS`)."""
        row = {name: getattr(self, name) for name in ROW_FIELDS}
        row["budgets"] = list(self.budgets)
        row["tasks"] = [{"task_id": i + 1, **t.to_dict()} for i, t in enumerate(self.tasks)]
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Episode:
        """Rebuild an episode from a dataset row, raising DatasetError on a corrupt row."""
        rid = row.get("episode_id", "<no episode_id>") if isinstance(row, Mapping) else "?"
        fix = "rebuild it with `python -m dataset_builder build --out DIR`"

        def bad(msg: str) -> DatasetError:
            return DatasetError(f"corrupt episode row {rid!r}: {msg}; {fix}")

        if not isinstance(row, Mapping):
            raise bad(f"expected a mapping, got {type(row).__name__}")
        missing = [k for k in ROW_FIELDS if k not in row]
        if missing:
            raise bad(f"missing field(s) {', '.join(missing)}")
        try:
            tasks_raw = list(row["tasks"])
            for i, t in enumerate(tasks_raw, start=1):
                empty = [k for k in ("question", "answer") if not isinstance(t.get(k), str)
                         or not t[k].strip()]  # fmt: skip
                if empty:
                    raise bad(f"task {i} has no {' or '.join(empty)} (null or empty)")
            budgets = tuple(int(b) for b in row["budgets"])
            n_tasks, closing = int(row["n_tasks"]), int(row["closing_budget"])
            tasks = tuple(
                Task(
                    family=str(t["family"]),
                    kind=str(t["kind"]),
                    question=str(t["question"]),
                    answer=str(t["answer"]),
                    checker=str(t["checker"]),
                    accepted=tuple(str(a) for a in (t.get("accepted") or ())),
                    tolerance=float(t.get("tolerance") or 0.0),
                    target_language=str(t.get("target_language") or "en"),
                )
                for t in tasks_raw
            )
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise bad(f"unreadable value ({exc})") from None
        if n_tasks != len(tasks) or len(budgets) != n_tasks:
            raise bad(f"n_tasks={n_tasks} but {len(tasks)} tasks and {len(budgets)} budgets")
        if n_tasks < 1:
            raise bad("no tasks")
        if any(b < 0 for b in (*budgets, closing)):
            raise bad(f"negative budget in {list(budgets)} / closing {closing}")
        if any(b > MAX_BUDGET for b in (*budgets, closing)):
            raise bad(f"budget above {MAX_BUDGET} tokens in {list(budgets)} / closing {closing}")
        ids = [t.get("task_id") for t in tasks_raw]
        if ids != list(range(1, n_tasks + 1)):
            raise bad(f"task ids {ids} are not 1..{n_tasks} in order")
        for i, t in enumerate(tasks, start=1):
            if t.checker not in CHECKERS:
                raise bad(f"unknown checker {t.checker!r}")
            if t.family not in FAMILIES:
                raise bad(
                    f"task {i} has unknown family {t.family!r} (known: {', '.join(FAMILIES)})"
                )
            # inf counts every numeric answer correct, NaN none, a negative one none
            if not math.isfinite(t.tolerance) or t.tolerance < 0:
                raise bad(f"task {i} has tolerance {t.tolerance}; it must be a finite number >= 0")
        return cls(
            episode_id=str(row["episode_id"]),
            config=str(row["config"]),
            split=str(row["split"]),
            index=int(row["index"]),
            seed=int(row["seed"]),
            generator_version=str(row["generator_version"]),
            budgets=budgets,
            closing_budget=closing,
            tasks=tasks,
        )


MAX_BUDGET = 8192  # no shipped config comes near; a larger value is a corrupt row


def check_budgets(episode: Episode, config: EpisodeConfig | None = None) -> None:
    """Raise DatasetError when a row has a budget outside its config's interval (or a
    closing budget other than its own), or a task of a family its config does not draw:
    such a row was edited or corrupted, and the model must not be blamed for what it does
    with it. ``config`` describes a config that is not shipped (from the build's
    ``build_info.json``); a row of an undescribed, unshipped config cannot be checked and is
    refused rather than let through unchecked."""
    config = config or CONFIGS.get(episode.config)
    fix = "rebuild it with `python -m dataset_builder build --out DIR`"
    if config is None:
        raise DatasetError(
            f"episode row {episode.episode_id!r} has config {episode.config!r}, which is not a "
            f"shipped config ({', '.join(CONFIGS)}) nor described by the build's "
            f"build_info.json, so its budgets cannot be checked; {fix}"
        )
    lo, hi = config.budget_lo, config.budget_hi
    wrong = [b for b in episode.budgets if not lo <= b <= hi]
    if wrong or episode.closing_budget != config.closing_budget:
        raise DatasetError(
            f"corrupt episode row {episode.episode_id!r}: config {config.name!r} draws budgets "
            f"from [{lo}, {hi}] with closing budget {config.closing_budget}, but the row has "
            f"{list(episode.budgets)} / closing {episode.closing_budget}; {fix}"
        )
    foreign = sorted({t.family for t in episode.tasks} - set(config.families))
    if foreign:
        raise DatasetError(
            f"corrupt episode row {episode.episode_id!r}: config {config.name!r} draws tasks "
            f"of {', '.join(config.families)}, but the row has {', '.join(foreign)}; {fix}"
        )


def episode_seed(base_seed: int, config: str, split: str, index: int) -> int:
    """A 63-bit seed per episode. Hashing the split into it keeps the splits disjoint."""
    key = f"{_SEED_NAMESPACE}|{base_seed}|{config}|{split}|{index}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


def generate_episode(
    config: EpisodeConfig, split: str, index: int, base_seed: int = DEFAULT_SEED
) -> Episode:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    seed = episode_seed(base_seed, config.name, split, index)
    rng = random.Random(seed)
    budgets = tuple(rng.randint(config.budget_lo, config.budget_hi) for _ in range(config.n_tasks))
    tasks: list[Task] = []
    seen: set[str] = set()
    for _ in range(config.n_tasks):
        for _attempt in range(_MAX_DUPLICATE_RETRIES):
            family = get_family(rng.choice(config.families))
            task = family.generate(rng, config.difficulty)
            if task.question not in seen:
                break
        seen.add(task.question)
        tasks.append(task)
    return Episode(
        episode_id=f"{config.name}-{split}-{index:05d}",
        config=config.name,
        split=split,
        index=index,
        seed=seed,
        generator_version=GENERATOR_VERSION,
        budgets=budgets,
        closing_budget=config.closing_budget,
        tasks=tuple(tasks),
    )


def generate_split(
    config: EpisodeConfig, split: str, n: int, base_seed: int = DEFAULT_SEED
) -> list[Episode]:
    return [generate_episode(config, split, i, base_seed) for i in range(n)]
