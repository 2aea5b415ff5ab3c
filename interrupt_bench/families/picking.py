"""Picking: the one word of a short list that belongs to a named everyday category
(animals, colours, fruit and vegetables, drinks, body parts). The answer is one of the
words shown, and the other words come from no category at all, so exactly one fits."""

from __future__ import annotations

import random

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
KINDS = tuple(name.split(" ", 1)[1].replace(" ", "_") for name in CATEGORIES)
_CHOICES = {1: 3, 2: 4, 3: 5}


@register_family("picking", "The one word of a short list in a named category", KINDS)
def generate(rng: random.Random, difficulty: int) -> Task:
    category = rng.choice(tuple(CATEGORIES))
    answer = rng.choice(CATEGORIES[category])
    words = [answer, *rng.sample(FILLERS, _CHOICES[difficulty] - 1)]
    rng.shuffle(words)
    return Task(
        "picking",
        category.split(" ", 1)[1].replace(" ", "_"),
        f"Which of these words is {category}: {', '.join(words)}?",
        answer,
        checker="text",
    )
