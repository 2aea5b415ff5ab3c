"""Comparison: the larger or the smaller of two numbers. One of the two shown numbers is
the answer, so the task costs a small model almost nothing to compute."""

from __future__ import annotations

import random

from interrupt_bench.tasks import Task, register_family

KINDS = ("larger", "smaller")
_MAX_NUMBER = {1: 99, 2: 999, 3: 9999}


@register_family("comparison", "The larger or the smaller of two numbers", KINDS)
def generate(rng: random.Random, difficulty: int) -> Task:
    kind = rng.choice(KINDS)
    a, b = rng.sample(range(1, _MAX_NUMBER[difficulty] + 1), 2)
    answer = max(a, b) if kind == "larger" else min(a, b)
    return Task(
        "comparison", kind, f"Which number is {kind}: {a} or {b}?", str(answer), checker="number"
    )
