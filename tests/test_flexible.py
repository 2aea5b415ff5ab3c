"""The ``flexible`` filter: what it credits, from real SmolLM2-135M-Instruct turns.

Every output below is verbatim from SmolLM2-135M-Instruct (dequantized Q4_1, bf16, greedy,
0-shot, chat template) on the default config's validation split, as logged by
``interrupt-bench-reproduce fewshot``. The model writes no tags at 0 shots, so
strict accuracy is 0 there; flexible reads the answer from the untagged text."""

from __future__ import annotations

import pytest

from interrupt_bench.checkers import extract
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
