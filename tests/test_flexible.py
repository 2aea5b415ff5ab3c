"""The ``flexible`` filter: what it credits, from real SmolLM2-135M-Instruct turns.

Every output below is verbatim from SmolLM2-135M-Instruct (dequantized Q4_1, bf16, greedy,
0-shot, chat template) on the default config's validation split, as logged by
``interrupt-bench-reproduce fewshot``. The model writes no tags at 0 shots, so
strict accuracy is 0 there; flexible reads the answer from the untagged text."""

from __future__ import annotations

import pytest

from interrupt_bench.checkers import extract, flexible_answer, repeats_question
from interrupt_bench.episodes import Episode
from interrupt_bench.scoring import score_episode
from interrupt_bench.tasks import Task


def math(question: str, answer: str, tolerance: float = 0.0) -> Task:
    return Task("math", "x", question, answer, checker="number", tolerance=tolerance)


def translate(source: str, answer: str, lang: str, accepted=()) -> Task:
    question = f'What is the translation of "{source}" from English to {lang}?'
    code = {"Spanish": "es", "German": "de", "French": "fr", "English": "en"}[lang]
    return Task("translation", "en-x", question, answer, "text", tuple(accepted), 0.0, code)


def order(question: str, answer: str) -> Task:
    return Task("ordering", "x", question, answer, checker="sequence")


# (task, SmolLM2's own untagged turn, what flexible extracts, credited?)
REAL_TURNS = [
    (order("Reverse the order of this list: 90, 1, 66, 72", "72 66 1 90"),
     "The reverse of the order of this list is 72, 90, 1, 66.", "72, 90, 1, 66", False),
    (order("Sort these words alphabetically: happy, husband, put", "happy husband put"),
     "The words are:\n- happy\n- husband\n- put", "happy, husband, put", True),
    (order("Sort these numbers in ascending order: 44, 86, 95, 82", "44 82 86 95"),
     "44, 86, 95, 82.", "44, 86, 95, 82", False),
    (order("Sort these numbers in descending order: 91, 17, 24", "91 24 17"),
     "17, 24", None, False),  # a list cut short is not a complete list
    (order("Sort these words alphabetically: grass, thirteen, plane", "grass plane thirteen"),
     "Grass, 13, plane.", "Grass, 13, plane", False),
    (translate("name", "nombre", "Spanish"),
     'The translation of "name" from English to Spanish is "El nombre" in Spanish.',
     "El nombre", True),  # the article goes, as in the strict checker
    (translate("cow", "Kuh", "German"), 'Cow is "Kow" in German.', "Kow", False),
    (translate("éléphant", "elephant", "English"), "The answer is: Elephant", "Elephant", True),
    (translate("car", "Auto", "German"), "Der korflegen.", "Der korflegen", False),
    (translate("rico", "rich", "English"),
     'The translation of "rico" from Spanish to English is', None, False),
    (math("What is 27 ÷ 13? Give the answer to 2 decimal places.", "2.08", 0.01),
     "27 ÷ 13 = 1.5", "1.5", False),
    (math("What is 78 + 28?", "106"), "The answer to this question is 152.", "152", False),
    (math("What is 14 ÷ 7?", "2"), "The answer is: 14", "14", False),
    (math("What is 88 - 28?", "60"), "88 - 28 = 60.", "60", True),
    (math("What is 5% of 115?", "5.75"), "115 is 5% of 115.", "115", False),
]  # fmt: skip


@pytest.mark.parametrize(("task", "text", "extracted", "credited"), REAL_TURNS)
def test_extractors_on_real_smollm2_turns(task, text, extracted, credited):
    assert extract(task, text) == extracted
    assert (extracted is not None and task.check(extracted)) == credited


def _episode(*tasks: Task) -> Episode:
    return Episode(
        episode_id="t-0", config="default", split="test", index=0, seed=0,
        generator_version="x", budgets=tuple(50 for _ in tasks), closing_budget=50,
        tasks=tuple(tasks),
    )  # fmt: skip


def test_flexible_credits_only_untagged_turns_of_unanswered_tasks():
    sub = math("What is 88 - 28?", "60")
    add = math("What is 2 + 2?", "4")
    mul = math("What is 3 * 3?", "9")
    episode = _episode(sub, add, mul)
    outputs = [
        "88 - 28 = 60.",  # untagged, right: flexible credits it
        "<thinking task=2>2 + 2 = 4",  # a tag in its own turn: strict rules, no credit
        "I think 9.",  # untagged and right, but a later closed answer (wrong) is final
        "<answer task=3>10</answer>",
    ]
    cut = [False, True, False, False]
    strict = score_episode(episode, outputs, cut)
    loose = score_episode(episode, outputs, cut, flexible=True)
    assert [v.correct for v in strict.verdicts] == [False, False, False]
    assert [v.correct for v in loose.verdicts] == [True, False, False]
    assert loose.verdicts[0].untagged_answer == "60"
    assert (loose.accuracy, strict.accuracy) == (1 / 3, 0.0)
    # only accuracy moves: answers, re-attempts, resumption and format stay the protocol's
    for name in ("answer_rate", "reattempts", "format_rate", "resumption_rate"):
        assert getattr(loose, name) == getattr(strict, name)
    assert loose.family_counts == {"math": (1, 3)}


# --- An echo of the question earns nothing (issue 33 item 2) ----------------------------


def task(family: str, question: str, answer: str, checker: str) -> Task:
    return Task(family, "x", question, answer, checker=checker)


# Questions that show their answer (the easy tier's by design; the others as generator
# 1.0.0 drew them), with a reply that states the answer rather than repeating the question.
SHOWN = [
    (task("copying", 'Repeat this word: "city"', "city", "text"), "city"),
    (task("copying", "Repeat this number: 4821", "4821", "number"), "4821"),
    (task("picking", "What is the word between the brackets: [city]?", "city", "text"),
     "The word between the brackets is city."),
    (task("picking", "What is the first word of this list: ship, rain, lake?", "ship", "text"),
     "ship"),
    (task("picking", "Which of these words is an animal: table, cat, box?", "cat", "text"),
     '"cat"'),
    (task("comparison", "Which number is larger: 45 or 67?", "67", "number"),
     "The larger number is 67."),
    (task("comparison", "Which number is smaller: 45 or 67?", "45", "number"), "45"),
    (task("math", "What is 24 - 12?", "12", "number"), "24 - 12 = 12"),
    (task("math", "What is 81 ÷ 9?", "9", "number"), "81 ÷ 9 = 9"),
    (task("ordering", "Sort these numbers in ascending order: 9, 22, 32, 76", "9 22 32 76",
          "sequence"), None),  # the right list is a copy of the question's: no reply counts
    (task("translation", 'What is the translation of "animal" from French to English?',
          "animal", "text"), "Animal"),
]  # fmt: skip


def _prefixes(text: str) -> list[str]:
    """``text`` cut after each of its whitespace-separated tokens, as a budget cuts it."""
    words = text.split(" ")
    return [" ".join(words[:n]) for n in range(1, len(words) + 1)]


@pytest.mark.parametrize(("task", "reply"), SHOWN, ids=[t.question[:32] for t, _ in SHOWN])
def test_an_echo_of_the_question_earns_nothing_and_an_answer_still_counts(task, reply):
    # The echo, whole or cut at any token, bare or in its question tag: no flexible credit.
    for echo in _prefixes(task.question):
        for text in (echo, f"<question task=1>{echo}</question>", f"{echo}\n"):
            assert flexible_answer(task, text) is None or not task.check(
                flexible_answer(task, text)
            ), text
    if reply is None:
        return
    # A reply that states the answer is read as before, and so is one right after the echo
    # wherever the extractor reads it there (not a quoted word's tail: 'city" city').
    assert task.check(flexible_answer(task, reply)), reply
    after_echo = f"{task.question}\n{reply}"
    if task.check(extract(task, after_echo) or ""):
        assert task.check(flexible_answer(task, after_echo)), after_echo


def test_echo_turns_score_nothing_under_the_flexible_filter():
    tasks = [t for t, _ in SHOWN]
    echoed = _episode(*tasks)
    outputs = [t.question for t in tasks] + [""]
    loose = score_episode(echoed, outputs, [False] * len(outputs), flexible=True)
    assert loose.correct == 0 and all(v.untagged_answer is None for v in loose.verdicts)
    # What the filter credited before it knew an echo: the extractor alone reads a right
    # answer out of most of these questions.
    assert [t.check(extract(t, t.question) or "") for t in tasks] == [
        True, True, True, False, False, True, False, True, True, True, False,
    ]  # fmt: skip
    answered = score_episode(echoed, [r or "" for _, r in SHOWN] + [""], None, flexible=True)
    assert answered.correct == sum(r is not None for _, r in SHOWN)


@pytest.mark.parametrize(
    ("question", "text", "start_end", "repeats"),
    [
        ("Which number is larger: 45 or 67?", "Which number is larger: 45 or 67?", (31, 33), True),
        ("Which number is larger: 45 or 67?", "or 67", (3, 5), True),
        ("Which number is larger: 45 or 67?", "67", (0, 2), False),
        ("Which number is larger: 45 or 67?", "45 or 67? 67", (10, 12), False),
        ("What is 88 - 28?", "88 - 28 = 60.", (10, 12), False),
        ('Repeat this word: "city"', 'WORD: "City"', (7, 11), True),  # case and quotes
        ("Sort these numbers: 3, 4, 1, 2", "1, 2, 3, 4", (0, 10), False),  # two runs
        ("Sort these numbers: 3, 4, 1, 2", "4, 1", (0, 4), True),
        ('What is the translation of "hôtel"?', "Hotel", (0, 5), False),
        ('What is the translation of "hôtel"?', "of hotel", (3, 8), True),  # accents
        ("What is 2 + 2?", "", (0, 0), False),
    ],
)
def test_repeats_question(question, text, start_end, repeats):
    assert repeats_question(question, text, *start_end) is repeats


def test_the_echo_rule_changes_three_real_turns_all_repeats():
    """On SmolLM2's real turns above, the filter reads what ``extract`` reads except where
    the candidate only repeats the question: a list copied in the question's own order
    (one of them was credited: the question showed its answer, which generator 1.1.0 no
    longer draws) and "is: 14" after "What is 14"."""
    changed = [
        (t.question, text)
        for t, text, extracted, _ in REAL_TURNS
        if flexible_answer(t, text) != extracted
    ]
    assert changed == [
        ("Sort these words alphabetically: happy, husband, put",
         "The words are:\n- happy\n- husband\n- put"),
        ("Sort these numbers in ascending order: 44, 86, 95, 82", "44, 86, 95, 82."),
        ("What is 14 ÷ 7?", "The answer is: 14"),
    ]  # fmt: skip
    assert all(flexible_answer(t, text) is None for t, text in [
        (next(r[0] for r in REAL_TURNS if r[0].question == q), text) for q, text in changed
    ])  # fmt: skip


@pytest.mark.parametrize("family", ["math", "translation", "ordering", "copying", "picking",
                                    "comparison"])  # fmt: skip
def test_no_generated_question_credits_its_own_echo(family):
    """Every family, every difficulty: a question said back, whole or cut at any token,
    earns no flexible credit."""
    import random

    from interrupt_bench.families import get_family

    rng = random.Random(33)
    for difficulty in (1, 2, 3):
        for _ in range(150):
            t = get_family(family).generate(rng, difficulty)
            for echo in _prefixes(t.question):
                got = flexible_answer(t, echo)
                assert got is None or not t.check(got), (t.question, echo, got)
