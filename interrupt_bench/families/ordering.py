"""Ordering: sort numbers up or down, sort words alphabetically, reverse a list. The list
shown is never already in the order asked for (a copy of it would be the answer)."""

from __future__ import annotations

import random

from interrupt_bench.families.translation import english_words
from interrupt_bench.tasks import Task, register_family

KINDS = ("sort_ascending", "sort_descending", "sort_words", "reverse")
_LENGTH = {1: (3, 4), 2: (5, 6), 3: (7, 9)}
_MAX_NUMBER = {1: 99, 2: 999, 3: 9999}
_ASK = {
    "sort_ascending": "Sort these numbers in ascending order",
    "sort_descending": "Sort these numbers in descending order",
    "sort_words": "Sort these words alphabetically",
    "reverse": "Reverse the order of this list",
}


def ordered(kind: str, items: list[str]) -> list[str]:
    """``items`` in the order ``kind`` asks for."""
    if kind == "sort_ascending":
        return sorted(items, key=int)
    if kind == "sort_descending":
        return sorted(items, key=int, reverse=True)
    if kind == "sort_words":
        return sorted(items, key=str.casefold)
    return items[::-1]


@register_family("ordering", "Sort numbers or words, reverse a list", KINDS)
def generate(rng: random.Random, difficulty: int) -> Task:
    kind = rng.choice(KINDS)
    length = rng.randint(*_LENGTH[difficulty])
    if kind == "sort_words" or (kind == "reverse" and rng.random() < 0.5):
        items = rng.sample(english_words(), length)
    else:
        items = [str(n) for n in rng.sample(range(_MAX_NUMBER[difficulty] + 1), length)]
    answer = ordered(kind, items)
    while answer == items:  # already in the asked order: shuffle (items are distinct)
        rng.shuffle(items)
        answer = ordered(kind, items)
    question = f"{_ASK[kind]}: {', '.join(items)}"
    return Task("ordering", kind, question, " ".join(answer), checker="sequence")
