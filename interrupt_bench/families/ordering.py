"""Ordering: sort numbers up or down, sort words alphabetically, reverse a list."""

from __future__ import annotations

import random

from interrupt_bench.families.translation import english_words
from interrupt_bench.tasks import Task, register_family

KINDS = ("sort_ascending", "sort_descending", "sort_words", "reverse")
_LENGTH = {1: (3, 4), 2: (5, 6), 3: (7, 9)}
_MAX_NUMBER = {1: 99, 2: 999, 3: 9999}


@register_family("ordering", "Sort numbers or words, reverse a list", KINDS)
def generate(rng: random.Random, difficulty: int) -> Task:
    kind = rng.choice(KINDS)
    length = rng.randint(*_LENGTH[difficulty])
    if kind == "sort_words" or (kind == "reverse" and rng.random() < 0.5):
        items = rng.sample(english_words(), length)
    else:
        items = [str(n) for n in rng.sample(range(_MAX_NUMBER[difficulty] + 1), length)]
    shown = ", ".join(items)
    if kind == "sort_ascending":
        question = f"Sort these numbers in ascending order: {shown}"
        answer = sorted(items, key=int)
    elif kind == "sort_descending":
        question = f"Sort these numbers in descending order: {shown}"
        answer = sorted(items, key=int, reverse=True)
    elif kind == "sort_words":
        question = f"Sort these words alphabetically: {shown}"
        answer = sorted(items, key=str.casefold)
    else:
        question = f"Reverse the order of this list: {shown}"
        answer = items[::-1]
    return Task("ordering", kind, question, " ".join(answer), checker="sequence")
