"""Picking: the one word of a short list that the question singles out: the first one,
the one in brackets, or the one in a named everyday category (animals, colours, fruit,
drinks, parts of the body). The answer is one of the words shown. In the category kind
the other words come from no category, so exactly one fits."""

from __future__ import annotations

import random

from interrupt_bench.families.translation import english_words
from interrupt_bench.tasks import Task, register_family

CATEGORIES: dict[str, tuple[str, ...]] = {
    "an animal": ("cat", "dog", "horse", "cow", "bird", "fish", "bear", "rabbit", "lion",
                  "sheep", "mouse", "duck", "pig", "tiger", "frog"),
    "a colour": ("red", "blue", "green", "yellow", "black", "white", "brown", "pink",
                 "orange", "purple", "grey"),
    "a fruit": ("apple", "banana", "pear", "grape", "lemon", "cherry", "peach", "plum",
                "mango", "strawberry"),
    "a drink": ("water", "milk", "tea", "coffee", "juice", "beer", "wine"),
    "a part of the body": ("hand", "foot", "head", "nose", "ear", "eye", "arm", "leg",
                           "mouth", "knee"),
}  # fmt: skip
# Words in no category above, and plainly not in one.
FILLERS = (
    "table", "chair", "book", "door", "window", "car", "bus", "house", "road", "pencil",
    "bottle", "clock", "bridge", "shirt", "spoon", "cup", "lamp", "box", "key", "phone",
    "ticket", "money", "paper", "bed", "wall", "street", "school", "train", "hammer", "coat",
)  # fmt: skip
KINDS = ("first_word", "bracketed_word", "in_category")
_LENGTH = {1: 3, 2: 4, 3: 5}


@register_family("picking", "The one word of a short list the question singles out", KINDS)
def generate(rng: random.Random, difficulty: int) -> Task:
    kind = rng.choice(KINDS)
    n = _LENGTH[difficulty]
    if kind == "first_word":
        words = rng.sample(english_words(), n)
        question = f"What is the first word of this list: {', '.join(words)}?"
        return Task("picking", kind, question, words[0], checker="text")
    if kind == "bracketed_word":
        word = rng.choice(english_words())
        return Task("picking", kind, f"What is the word between the brackets: [{word}]?", word,
                    checker="text")  # fmt: skip
    category = rng.choice(tuple(CATEGORIES))
    answer = rng.choice(CATEGORIES[category])
    words = [answer, *rng.sample(FILLERS, n - 1)]
    rng.shuffle(words)
    question = f"Which of these words is {category}: {', '.join(words)}?"
    return Task("picking", kind, question, answer, checker="text")
