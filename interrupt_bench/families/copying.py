"""Copying: say back the word or the number the question shows. The answer is in the
question, so a model that fails it failed to keep track of the task, not to compute its
answer (SmolLM2-135M-Instruct alone: 20/20 of each kind)."""

from __future__ import annotations

import random

from interrupt_bench.families.translation import english_words
from interrupt_bench.tasks import Task, register_family

KINDS = ("repeat_word", "repeat_number")
_MAX_NUMBER = {1: 999, 2: 99_999, 3: 9_999_999}


@register_family("copying", "Say back a word or a number shown in the question", KINDS)
def generate(rng: random.Random, difficulty: int) -> Task:
    kind = rng.choice(KINDS)
    if kind == "repeat_word":
        word = rng.choice(english_words())
        return Task("copying", kind, f'Repeat this word: "{word}"', word, checker="text")
    number = rng.randint(10, _MAX_NUMBER[difficulty])
    return Task("copying", kind, f"Repeat this number: {number}", str(number), checker="number")
