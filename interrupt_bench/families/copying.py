"""Copying: say back a word the question shows (the word itself, or the first or last of
a short list). The answer is in the question, so a model that fails it failed to keep
track of the task, not to compute its answer."""

from __future__ import annotations

import random

from interrupt_bench.families.translation import english_words
from interrupt_bench.tasks import Task, register_family

KINDS = ("repeat_word", "first_word", "last_word")
_LIST_LENGTH = {1: (3, 3), 2: (3, 5), 3: (5, 7)}


@register_family("copying", "Say back a word shown in the question", KINDS)
def generate(rng: random.Random, difficulty: int) -> Task:
    kind = rng.choice(KINDS)
    if kind == "repeat_word":
        word = rng.choice(english_words())
        return Task("copying", kind, f'Repeat this word: "{word}"', word, checker="text")
    words = rng.sample(english_words(), rng.randint(*_LIST_LENGTH[difficulty]))
    shown = ", ".join(words)
    if kind == "first_word":
        return Task("copying", kind, f"What is the first word of this list: {shown}?",
                    words[0], checker="text")  # fmt: skip
    return Task("copying", kind, f"What is the last word of this list: {shown}?", words[-1],
                checker="text")  # fmt: skip
