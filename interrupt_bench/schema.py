"""The dataset row, written down once: one row per episode, one entry of ``tasks`` per
question. ``episode_features`` (the ``datasets.Features`` the builder writes and every
loader checks against), ``ROW_FIELDS`` (what ``Episode.from_row`` requires) and the
dataset card's ``dataset_info`` all come from :data:`TASK_COLUMNS` and
:data:`ROW_COLUMNS`. A column's type is a ``datasets`` value type; ``[type]`` is a list."""

from __future__ import annotations

from typing import Any

TASK_COLUMNS: dict[str, Any] = {
    "task_id": "int32",  # 1..n_tasks, the N of <question task=N>
    "family": "string",
    "kind": "string",
    "question": "string",
    "answer": "string",  # the canonical answer
    "checker": "string",  # a name in interrupt_bench.checkers.CHECKERS
    "accepted": ["string"],  # other answers the checker accepts
    "tolerance": "float64",  # numeric checkers: absolute tolerance
    "target_language": "string",
}

ROW_COLUMNS: dict[str, Any] = {
    "episode_id": "string",
    "config": "string",
    "split": "string",
    "index": "int32",
    "seed": "int64",  # the episode's own seed (from the build seed, config, split, index)
    "generator_version": "string",
    "n_tasks": "int32",
    "budgets": ["int32"],  # one token budget per question turn
    "closing_budget": "int32",  # 0: no closing turn
    "tasks": [TASK_COLUMNS],
}

ROW_FIELDS = tuple(ROW_COLUMNS)
TASK_FIELDS = tuple(TASK_COLUMNS)


def _feature(column: Any) -> Any:
    from datasets import List, Value

    if isinstance(column, list):
        return List(_feature(column[0]))
    if isinstance(column, dict):
        return {name: _feature(c) for name, c in column.items()}
    return Value(column)


def episode_features():
    """The ``datasets.Features`` of an episode row."""
    from datasets import Features

    return Features(_feature(ROW_COLUMNS))
