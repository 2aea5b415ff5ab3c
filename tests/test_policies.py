"""Reference policies pin the metrics end to end (protocol: Reference policies)."""

import pytest

from interrupt_bench.config import CONFIGS, get_config
from interrupt_bench.episodes import generate_split
from interrupt_bench.policies import cut_to_words, echo_text, policy_responder
from interrupt_bench.prompts import closing_message
from interrupt_bench.scoring import aggregate, score_episode
from interrupt_bench.session import replay
from interrupt_bench.tags import parse_turn


def _scores(config, policy, n=40):
    episodes = generate_split(config, "test", n)
    return [t.score() for t in replay(episodes, policy_responder(policy))]


@pytest.mark.parametrize("name", ["default", "tasks10_budget0to50", "tasks2_budget50to200"])
def test_oracle_with_ample_budgets_is_perfect(name):
    config = get_config(name).replace(budget_lo=500, budget_hi=500)
    scores = _scores(config, "oracle")
    assert all(s.accuracy == 1.0 and s.format_rate == 1.0 for s in scores)
    assert all(s.reattempts == 0 for s in scores)  # nothing left to come back to


def test_oracle_catches_up_in_the_closing_turn():
    config = get_config("default").replace(budget_lo=0, budget_hi=0, closing_budget=1000)
    scores = _scores(config, "oracle")
    assert all(s.accuracy == 1.0 for s in scores)
    assert all(s.reattempts == s.n_tasks for s in scores)
    assert aggregate(scores)["resumption_rate"] == 1.0


@pytest.mark.parametrize("name", ["default", "tasks5_budget0to50", "tasks10_budget50to200"])
def test_no_resume_never_reattempts(name):
    assert all(s.reattempts == 0 for s in _scores(get_config(name), "no_resume"))


def test_no_resume_with_zero_budgets_and_no_closing_turn_scores_zero():
    config = get_config("default").replace(budget_lo=0, budget_hi=0, closing_budget=0)
    scores = _scores(config, "no_resume")
    assert all(s.accuracy == 0.0 and s.n_turns == s.n_tasks for s in scores)


def test_oracle_beats_no_resume_on_default():
    config = get_config("default")
    oracle = aggregate(_scores(config, "oracle", 100))
    none = aggregate(_scores(config, "no_resume", 100))
    assert oracle["accuracy"] > none["accuracy"]
    assert oracle["reattempts"] > 0 == none["reattempts"]


@pytest.mark.parametrize("name", ["easy", "default", "tasks10_budget0to50"])
def test_close_open_finishes_exactly_what_is_open_in_the_closing_turn(name):
    config = get_config(name).replace(closing_budget=1000)
    for t in replay(generate_split(config, "test", 60), policy_responder("close_open")):
        score = t.score()
        open_tasks = {v.task_id for v in score.verdicts if not v.answered_in_own_turn}
        closed = {task_id for task_id, _ in parse_turn(t.outputs[-1]).answers()}
        assert closed == open_tasks and score.resumption_num == len(open_tasks)
        assert all(set(v.attempt_turns) <= {v.task_id, t.episode.n_turns} for v in score.verdicts)


@pytest.mark.parametrize("name", ["easy", "easy_tasks5_budget0to50", "tasks10_budget0to50"])
def test_close_last_resumes_only_the_last_task_its_chance_level(name):
    """The habit of closing the last task resumes a cut task only when the last one was
    cut: its resumption is the share of open tasks that are the last."""
    config = get_config(name)
    scores = _scores(config, "close_last", 200)
    last_open = sum(not s.verdicts[-1].answered_in_own_turn for s in scores)
    open_tasks = sum(s.resumption_den for s in scores)
    assert sum(s.resumption_num for s in scores) == last_open
    assert aggregate(scores)["resumption_rate"] == pytest.approx(last_open / open_tasks)
    assert 0 < last_open / open_tasks < 0.5
    # it re-answers the last task in every session; only when that task was open does
    # the re-attempt aim at something open
    assert aggregate(scores)["reattempt_precision"] == pytest.approx(last_open / len(scores))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_echo_scores_nothing_under_either_filter(name):
    """Saying each question back (and the closing message in the closing turn) earns
    nothing on any shipped config: strict accuracy 0, flexible at most 0.01 (0.000 on
    300 test episodes of every config)."""
    episodes = generate_split(get_config(name), "test", 300)
    transcripts = replay(episodes, policy_responder("echo"))
    strict = aggregate([score_episode(t.episode, t.outputs, t.cut) for t in transcripts])
    loose = aggregate(
        [score_episode(t.episode, t.outputs, t.cut, flexible=True) for t in transcripts]
    )
    assert strict["accuracy"] == 0.0 and strict["answer_rate"] == 0.0
    assert strict["reattempts"] == 0.0
    assert loose["accuracy"] <= 0.01


def test_echo_says_back_the_question_then_the_closing_message():
    episode = generate_split(get_config("default"), "test", 1)[0]
    assert [echo_text(episode, t, ()) for t in range(episode.n_turns)] == [
        *(task.question for task in episode.tasks),
        closing_message(episode.n_tasks),
    ]


def test_cut_to_words_keeps_spacing_and_counts():
    text = "<answer task=1>12</answer>\n<answer task=2>hello world</answer>"
    assert cut_to_words(text, 0).text == ""
    assert cut_to_words(text, 2).text == "<answer task=1>12</answer>"
    assert cut_to_words(text, 3).text == "<answer task=1>12</answer>\n<answer"
    assert cut_to_words(text, 3).cut and cut_to_words(text, 3).n_tokens == 3
    full = cut_to_words(text, 99)
    assert full.text == text and not full.cut and full.n_tokens == 5
