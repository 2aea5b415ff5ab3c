"""The worked example of docs/protocol.md, turn for turn."""

import math

import pytest

from interrupt_bench.episodes import Episode
from interrupt_bench.scoring import aggregate, reattempt_kinds, score_episode
from interrupt_bench.tasks import Task


@pytest.fixture
def episode() -> Episode:
    tasks = (
        Task(
            "math",
            "sqrt",
            "What is the square root of 110? Give the answer to 2 decimal places.",
            "10.49",
            checker="number",
            tolerance=0.01,
        ),
        Task(
            "translation",
            "fr-en",
            'What is the translation of "Bonjour" from French to English?',
            "hello",
            checker="text",
            accepted=("hi", "good morning"),
        ),
        Task(
            "ordering",
            "sort_ascending",
            "Sort these numbers in ascending order: 5, 2, 9",
            "2 5 9",
            checker="sequence",
        ),
    )
    return Episode("worked-example", "default", "test", 0, 0, "test", (12, 40, 0), 60, tasks)


OUTPUTS = [
    "<thinking task=1>Between 10 and 11, guess",
    "<answer task=2>Hello</answer><thinking task=1>10.5^2=110.25 so",
    "",
    "<answer task=1>10.49</answer><answer task=3>2 5 9</answer>",
]


def test_worked_example_metrics(episode):
    score = score_episode(episode, OUTPUTS)
    assert score.accuracy == 1.0
    assert score.reattempts == 2
    assert score.answer_rate == 1.0
    assert (score.resumption_num, score.resumption_den) == (2, 2)
    assert score.resumption_rate == 1.0
    assert score.format_rate == 1.0
    assert score.well_formed_turns == 4 and score.n_turns == 4


def test_worked_example_verdicts(episode):
    v = score_episode(episode, OUTPUTS).verdicts
    assert [x.final_answer for x in v] == ["10.49", "Hello", "2 5 9"]
    assert [x.attempt_turns for x in v] == [(1, 2, 4), (2,), (4,)]
    assert [x.answered_in_own_turn for x in v] == [False, True, False]
    assert [x.reattempted() for x in v] == [True, False, True]


def test_worked_example_aggregates_resumption_as_ratio_of_sums(episode):
    good = score_episode(episode, OUTPUTS)
    # The same episode where task 2 alone is answered on time and nothing is resumed.
    bad = score_episode(episode, ["", "<answer task=2>hi</answer>", "", ""])
    assert (bad.resumption_num, bad.resumption_den) == (0, 2)
    agg = aggregate([good, bad])
    assert agg["resumption_rate"] == pytest.approx(2 / 4)
    assert agg["accuracy"] == pytest.approx((1 + 1 / 3) / 2)
    assert agg["accuracy_math"] == pytest.approx(0.5)
    assert not math.isnan(agg["accuracy_stderr"])


def test_worked_example_reattempts_all_come_back_to_open_tasks(episode):
    # Task 1 is tagged in turn 2 and in the closing turn, task 3 in the closing turn, and
    # none of the three had a closed answer yet: three tags, all to open tasks.
    assert reattempt_kinds(episode, OUTPUTS) == {"open": 3, "finished": 0, "not_asked": 0}


def test_repeats_and_unasked_ids_are_told_apart_from_coming_back(episode):
    outputs = [
        "<answer task=1>10.49</answer>",
        "<answer task=2>hello</answer><answer task=3>2 5 9</answer>",  # task 3 not asked yet
        "",
        "<answer task=2>banana</answer><answer task=7>x</answer><answer task=3>2 5 9</answer>",
    ]
    assert reattempt_kinds(episode, outputs) == {"open": 1, "finished": 1, "not_asked": 2}
    # The metric counts a repeat like a return: both tasks 2 and 3 are re-attempts.
    assert score_episode(episode, outputs).reattempts == 2
