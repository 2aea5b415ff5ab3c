"""Translation of single words and short phrases, from the lexicon shipped in
``interrupt_bench/data/lexicon.tsv`` (one concept a row, ``|`` between accepted forms,
the first form canonical). No question shows its answer: a word spelt alike in both
languages ("animal", "Hotel" / "hôtel") is not asked in that direction, nor a word whose
answer is a word of the question ("tea" -> "thé", which reads as "the")."""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from importlib import resources

from interrupt_bench.tasks import Task, register_family

LANGUAGES = {"en": "English", "fr": "French", "es": "Spanish", "de": "German"}
DIRECTIONS = (("fr", "en"), ("es", "en"), ("de", "en"), ("en", "fr"), ("en", "es"), ("en", "de"))
KINDS = tuple(f"{src}-{dst}" for src, dst in DIRECTIONS)


@dataclass(frozen=True)
class Entry:
    kind: str  # "word" or "phrase"
    forms: dict[str, tuple[str, ...]]  # language -> accepted forms, canonical first


@functools.cache
def lexicon() -> tuple[Entry, ...]:
    text = resources.files("interrupt_bench").joinpath("data/lexicon.tsv").read_text("utf-8")
    lines = text.splitlines()
    header = lines[0].split("\t")
    entries = []
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(header):
            raise ValueError(f"lexicon.tsv line {number}: expected {len(header)} columns")
        kind, *forms = cells
        entries.append(
            Entry(kind, {lang: tuple(cell.split("|")) for lang, cell in zip(header[1:], forms)})
        )
    return tuple(entries)


@functools.cache
def _accepted_by_source(src: str, dst: str) -> dict[str, tuple[str, ...]]:
    """Every target form accepted for a source word: the union over all rows in which the
    word appears, so that a word with two meanings accepts both."""
    table: dict[str, list[str]] = {}
    for entry in lexicon():
        for form in entry.forms[src]:
            bucket = table.setdefault(form.casefold(), [])
            bucket.extend(f for f in entry.forms[dst] if f not in bucket)
    return {key: tuple(value) for key, value in table.items()}


@functools.cache
def english_words() -> tuple[str, ...]:
    """Distinct one-word lowercase English nouns/verbs/adjectives, for the ordering family."""
    words = {
        e.forms["en"][0]
        for e in lexicon()
        if e.kind == "word" and e.forms["en"][0].isalpha() and e.forms["en"][0].islower()
    }
    return tuple(sorted(words))


@register_family(
    "translation", "Words and short phrases between English, French, Spanish, German", KINDS
)
def generate(rng: random.Random, difficulty: int) -> Task:
    src, dst = rng.choice(DIRECTIONS)
    entries = lexicon()
    want_phrase = difficulty >= 2 and rng.random() < (0.3 if difficulty == 2 else 0.6)
    pool = [e for e in entries if (e.kind == "phrase") == want_phrase] or list(entries)
    task = _ask(rng.choice(pool), src, dst)
    while shows_answer(task):  # the same direction, another entry
        task = _ask(rng.choice(pool), src, dst)
    return task


def _ask(entry: Entry, src: str, dst: str) -> Task:
    source = entry.forms[src][0]
    answer = entry.forms[dst][0]
    accepted = tuple(f for f in _accepted_by_source(src, dst)[source.casefold()] if f != answer)
    question = f'What is the translation of "{source}" from {LANGUAGES[src]} to {LANGUAGES[dst]}?'
    return Task(
        "translation",
        f"{src}-{dst}",
        question,
        answer,
        checker="text",
        accepted=accepted,
        target_language=dst,
    )


def shows_answer(task: Task) -> bool:
    """True when the word asked about, or any one word of the question, is accepted as
    the answer (the checker ignores case, accents and quotes)."""
    asked = task.question.split('"')[1]
    return task.check(asked) or any(task.check(word) for word in task.question.split())
