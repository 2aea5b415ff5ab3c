"""Math operations: exact integer arithmetic, and non-integer results with a tolerance.
No question shows its answer: none of its numbers is accepted as the answer ("What is
81 ÷ 9?", "What is 24 - 12?", "What is 50% of 100?" are drawn again)."""

from __future__ import annotations

import math
import random
import re

from interrupt_bench.tasks import Task, register_family

KINDS = ("add", "subtract", "multiply", "divide", "divide_decimal", "sqrt", "power", "percent")
# Operand ranges by difficulty 1..3.
_ADD = {1: (1, 99), 2: (100, 999), 3: (1000, 9999)}
_MUL = {1: ((2, 12), (2, 12)), 2: ((10, 99), (2, 12)), 3: ((10, 99), (10, 99))}
_SQRT = {1: (2, 150), 2: (150, 1000), 3: (1000, 10000)}
_POW = {1: ((2, 10), (2, 3)), 2: ((2, 15), (2, 3)), 3: ((2, 20), (2, 4))}
_TWO_DP = "Give the answer to 2 decimal places."
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}".rstrip("0").rstrip(".")


def _exact(kind: str, question: str, value: float) -> Task:
    return Task("math", kind, question, _fmt(value), checker="number")


def _two_dp(kind: str, question: str, value: float) -> Task:
    return Task(
        "math", kind, f"{question} {_TWO_DP}", f"{value:.2f}", checker="number", tolerance=0.01
    )


def shows_answer(task: Task) -> bool:
    """True when a number in the question is accepted as its answer."""
    return any(task.check(number) for number in _NUMBER.findall(task.question))


@register_family("math", "Integer + − × ÷, powers, percentages, square roots", KINDS)
def generate(rng: random.Random, difficulty: int) -> Task:
    kind = rng.choice(KINDS)
    task = _draw(rng, kind, difficulty)
    while shows_answer(task):  # the same kind, drawn again
        task = _draw(rng, kind, difficulty)
    return task


def _draw(rng: random.Random, kind: str, difficulty: int) -> Task:
    if kind in ("add", "subtract"):
        a, b = rng.randint(*_ADD[difficulty]), rng.randint(*_ADD[difficulty])
        if kind == "add":
            return _exact(kind, f"What is {a} + {b}?", a + b)
        if difficulty == 1 and b > a:
            a, b = b, a
        return _exact(kind, f"What is {a} - {b}?", a - b)
    if kind in ("multiply", "divide"):
        (lo_a, hi_a), (lo_b, hi_b) = _MUL[difficulty]
        a, b = rng.randint(lo_a, hi_a), rng.randint(lo_b, hi_b)
        if kind == "multiply":
            return _exact(kind, f"What is {a} × {b}?", a * b)
        return _exact(kind, f"What is {a * b} ÷ {b}?", a)
    if kind == "divide_decimal":
        b = rng.choice((3, 6, 7, 9, 11, 12, 13))
        a = rng.randint(*_ADD[difficulty])
        while a % b == 0:
            a += 1
        return _two_dp(kind, f"What is {a} ÷ {b}?", a / b)
    if kind == "sqrt":
        n = rng.randint(*_SQRT[difficulty])
        while math.isqrt(n) ** 2 == n:
            n += 1
        return _two_dp(kind, f"What is the square root of {n}?", math.sqrt(n))
    if kind == "power":
        (lo_b, hi_b), (lo_e, hi_e) = _POW[difficulty]
        base, exp = rng.randint(lo_b, hi_b), rng.randint(lo_e, hi_e)
        return _exact(kind, f"What is {base} to the power of {exp}?", base**exp)
    # percent: p% of n has at most two decimals, so it is checked exactly.
    p = rng.choice(
        (5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 80, 90) if difficulty == 1 else range(1, 100)
    )
    n = rng.randint(*_ADD[min(difficulty + 1, 3)])
    return _exact(kind, f"What is {p}% of {n}?", p * n / 100)
