"""The task record every family produces and the registry families add themselves to.

A task is plain data (question, canonical answer, checker name and parameters) so it
survives a round trip through parquet and can be checked again anywhere without the
generator that made it."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from interrupt_bench.checkers import check


@dataclass(frozen=True)
class Task:
    """One question of an episode, with everything its checker needs."""

    family: str
    kind: str
    question: str
    answer: str
    checker: str
    accepted: tuple[str, ...] = ()
    tolerance: float = 0.0
    target_language: str = "en"

    def check(self, response: str) -> bool:
        return check(self, response)

    def to_dict(self) -> dict[str, Any]:
        """The task's columns of a dataset row (all but ``task_id``)."""
        return {**dataclasses.asdict(self), "accepted": list(self.accepted),
                "tolerance": float(self.tolerance)}  # fmt: skip


Generator = Callable[[random.Random, int], Task]


@dataclass(frozen=True)
class Family:
    """A task family: a name and a generator ``(rng, difficulty) -> Task``."""

    name: str
    generate: Generator
    description: str = ""
    kinds: tuple[str, ...] = field(default_factory=tuple)


FAMILIES: dict[str, Family] = {}


def register_family(name: str, description: str = "", kinds: tuple[str, ...] = ()):
    """Decorator: add a generator to the registry under ``name``.

    New families live in their own module and register themselves; nothing else changes.
    :func:`interrupt_bench.families.get_family` looks them up."""

    def decorate(fn: Generator) -> Generator:
        if name in FAMILIES:
            raise ValueError(f"task family {name!r} is registered twice")
        FAMILIES[name] = Family(name=name, generate=fn, description=description, kinds=kinds)
        return fn

    return decorate
