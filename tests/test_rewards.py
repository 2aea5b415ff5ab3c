import pytest

from interrupt_bench.episodes import Episode
from interrupt_bench.scoring import score_episode
from interrupt_bench.tasks import Task
from training.rewards import (
    RewardWeights,
    advantages,
    answer_once_rate,
    closed_reattempt_rate,
    cut_resumed_rate,
    normalise,
    resumed_rate,
    reward,
    tag_credits,
    turn_advantages,
    turn_credit_advantages,
)

TASKS = tuple(Task("math", "add", f"{i} + {i}", str(2 * i), checker="number") for i in (1, 2))
EPISODE = Episode("e", "default", "test", 0, 0, "t", (5, 5), 50, TASKS)


def _score(*outputs):
    return score_episode(EPISODE, list(outputs))


PERFECT = _score("<answer task=1>2</answer>", "<answer task=2>4</answer>", "")
RESUMED = _score("", "<answer task=1>2</answer><answer task=2>4</answer>", "")
TWICE = _score(
    "<answer task=1>2</answer>", "<answer task=1>2</answer><answer task=2>5</answer>", ""
)
NOTHING = _score("", "", "")
# A finished task tagged again in the closing turn: a re-attempt, not a resumption.
REDUNDANT = _score(
    "<answer task=1>2</answer>", "<answer task=2>4</answer>", "<answer task=1>x</answer>"
)


@pytest.mark.parametrize(
    ("score", "weights", "expected"),
    [
        (PERFECT, RewardWeights(), 1.0),
        (NOTHING, RewardWeights(), 0.0),
        (TWICE, RewardWeights(), 0.5),
        (RESUMED, RewardWeights(reattempts=1.0), 1.0 + 0.5),
        (TWICE, RewardWeights(accuracy=0.0, answer_once=1.0), 0.5),
        (NOTHING, RewardWeights(accuracy=0.0, format=0.5), 0.5),
        (RESUMED, RewardWeights(resumption=1.0), 1.0 + 0.5),
        (TWICE, RewardWeights(accuracy=0.0, resumption=1.0), 0.0),
        (REDUNDANT, RewardWeights(accuracy=0.0, reattempts=1.0), 0.5),
        (REDUNDANT, RewardWeights(accuracy=0.0, resumption=1.0), 0.0),
        (REDUNDANT, RewardWeights(closed_reattempts=-1.0), 0.5 - 0.5),  # and it overwrote
        (RESUMED, RewardWeights(closed_reattempts=-1.0), 1.0),
    ],
)
def test_reward_table(score, weights, expected):
    assert reward(score, weights) == pytest.approx(expected)


def test_answer_once_rate():
    assert answer_once_rate(PERFECT) == 1.0 and answer_once_rate(TWICE) == 0.5


def test_resumed_rate_counts_only_tasks_that_were_open():
    assert resumed_rate(RESUMED) == 0.5  # task 1 was open after turn 1; task 2 was its own
    assert resumed_rate(REDUNDANT) == 0.0 and resumed_rate(PERFECT) == 0.0


def test_cut_resumption_pays_for_interrupted_tasks_not_deferred_ones():
    # RESUMED: turn 1 wrote nothing, turn 2 answered task 1. Whether that is a resumption
    # worth paying for depends on why turn 1 holds no answer.
    interrupted, deferred = [True, False, False], [False, False, False]
    assert cut_resumed_rate(RESUMED, interrupted) == 0.5
    assert cut_resumed_rate(RESUMED, deferred) == 0.0
    assert cut_resumed_rate(RESUMED, [None, False, False]) == 0.5  # unknown counts as cut
    assert cut_resumed_rate(PERFECT, [True, True, False]) == 0.0  # answered in its own turn
    weights = RewardWeights(accuracy=0.0, cut_resumption=2.0)
    assert reward(RESUMED, weights, interrupted) == pytest.approx(1.0)
    assert reward(RESUMED, weights, deferred) == 0.0
    with pytest.raises(ValueError, match="cut flags"):
        reward(RESUMED, weights)
    with pytest.raises(ValueError, match="cut holds 1 turns"):
        cut_resumed_rate(RESUMED, [True])


def test_cut_resumption_correct_pays_for_a_right_answer_only():
    # Both go back to task 1, cut in its own turn; only the first answers it right.
    wrong = _score("", "<answer task=1>7</answer><answer task=2>4</answer>", "")
    cut = [True, False, False]
    assert cut_resumed_rate(RESUMED, cut, correct_only=True) == 0.5
    assert cut_resumed_rate(wrong, cut) == 0.5
    assert cut_resumed_rate(wrong, cut, correct_only=True) == 0.0
    weights = RewardWeights(accuracy=0.0, cut_resumption=1.0, cut_resumption_correct=4.0)
    assert reward(RESUMED, weights, cut) == pytest.approx(0.5 + 2.0)
    assert reward(wrong, weights, cut) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="cut flags"):
        reward(RESUMED, RewardWeights(cut_resumption_correct=1.0))


def test_closed_reattempts_count_going_back_to_finished_tasks_only():
    # REDUNDANT re-tags task 1, answered in turn 1; RESUMED goes back to task 1, left open.
    assert closed_reattempt_rate(REDUNDANT) == 0.5
    assert closed_reattempt_rate(RESUMED) == 0.0 and closed_reattempt_rate(PERFECT) == 0.0
    # TWICE re-answers task 1 (closed in turn 1) in turn 2.
    assert closed_reattempt_rate(TWICE) == 0.5
    assert REDUNDANT.reattempts - REDUNDANT.reattempts_open == 1


@pytest.mark.parametrize(
    ("baseline", "expected"),
    [
        ("rloo", [1 - 0.5, 0 - 1.0, 1 - 0.5, -2 / 3, 2 / 3 - 1 / 3, 2 / 3 - 1 / 3]),
        ("group_mean", [1 - 2 / 3, -2 / 3, 1 - 2 / 3, -4 / 9, 2 / 3 - 4 / 9, 2 / 3 - 4 / 9]),
        ("running_mean", [0.75, -0.25, 0.75, -0.25, 2 / 3 - 0.25, 2 / 3 - 0.25]),
        ("none", [1, 0, 1, 0, 2 / 3, 2 / 3]),
    ],
)
def test_advantage_table(baseline, expected):
    rewards = [1, 0, 1, 0, 2 / 3, 2 / 3]
    assert advantages(rewards, 3, baseline, running_mean=0.25) == pytest.approx(expected)


def test_advantage_errors():
    with pytest.raises(ValueError, match="groups of 3"):
        advantages([1, 2], 3, "rloo")
    with pytest.raises(ValueError, match="unknown baseline"):
        advantages([1], 1, "ppo")
    with pytest.raises(ValueError, match="samples_per_episode >= 2"):
        advantages([1], 1, "rloo")


def test_normalise_gives_unit_std():
    out = normalise([1.0, -1.0, 3.0, -3.0])
    mean = sum(out) / 4
    assert (sum((v - mean) ** 2 for v in out) / 3) ** 0.5 == pytest.approx(1.0, rel=1e-4)


def test_every_reward_option_reaches_the_reward():
    """Each ``reward_<term>`` of the training config sets the weight of that term."""
    import dataclasses

    from training.config import TrainConfig
    from training.run_setup import reward_weights

    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name.startswith("reward_")]
    values = {name: float(i + 2) for i, name in enumerate(names)}
    weights = reward_weights(TrainConfig(model_name_or_path="m", **values))
    assert dataclasses.asdict(weights) == {n.removeprefix("reward_"): v for n, v in values.items()}


def test_tag_credits_pay_for_going_back_to_interrupted_tasks_only():
    no_cut = [False, False, False]
    # Own-turn answers are not returns: nothing to credit.
    done = ["<answer task=1>2</answer>", "<answer task=2>4</answer>", ""]
    assert tag_credits(done, no_cut, 2) == [0.0, 0.0, 0.0]
    # Task 1 cut in turn 1, answered in turn 2: +1 there; re-answered in the closing turn,
    # when it was no longer open: -1; task 2, answered in its own turn, re-tagged: -1.
    outputs = [
        "<thinking task=1>",
        "<answer task=1>2</answer><answer task=2>4</answer>",
        "<answer task=1>2</answer><thinking task=2>",
    ]
    assert tag_credits(outputs, [True, False, True], 2) == [0.0, 1.0, -2.0]
    # A tag at a task not yet asked counts nothing; a thinking tag at a cut task counts.
    early = ["<answer task=2>4</answer>", "<thinking task=1>1 + 1", ""]
    assert tag_credits(early, [True, True, False], 2) == [0.0, 1.0, 0.0]
    # One answer a turn late: turn 1 ends on its own with no answer (-1, the deferral),
    # turn 2 goes back to it (0: it was not interrupted) and leaves task 2 (-1), which
    # the closing turn answers (0 again). Deferring never pays.
    late = ["", "<answer task=1>2</answer>", "<answer task=2>4</answer>"]
    assert tag_credits(late, no_cut, 2) == [-1.0, -1.0, 0.0]
    # None (unknown) counts as cut, as in the scorer: the return to task 1 pays, and the
    # cut turn 2 is not charged for task 2; a closing turn is never charged.
    assert tag_credits(["", "<answer task=1>2</answer>", ""], [None, None, False], 2) == [
        0.0,
        1.0,
        0.0,
    ]
    with pytest.raises(ValueError, match="cut holds 2 turns"):
        tag_credits(["", "", ""], [True, True], 2)


def test_turn_advantages_compare_each_turn_with_the_other_samples():
    credits = [[0.0, 1.0, -1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    out = turn_advantages(credits, group_size=2)
    assert out == [[0.0, 1.0, -2.0], [0.0, -1.0, 2.0], [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]
    with pytest.raises(ValueError, match="samples_per_episode >= 2"):
        turn_advantages(credits, group_size=1)


def test_turn_credit_advantages_weigh_credits_against_the_chosen_baseline():
    # Every sample re-answers a finished task in the closing turn (-1); one also returns to
    # a cut task in turn 2. Leave-one-out cancels the shared cost; no baseline keeps it.
    credits = [[0.0, 1.0, -1.0], [0.0, 0.0, -1.0]]
    assert turn_credit_advantages(credits, 2.0, "rloo", 2) == [[0.0, 2.0, 0.0], [0.0, -2.0, 0.0]]
    assert turn_credit_advantages(credits, 2.0, "none", 2) == [[0.0, 2.0, -2.0], [0.0, 0.0, -2.0]]
    with pytest.raises(ValueError, match="use rloo or none"):
        turn_credit_advantages(credits, 1.0, "mean", 2)
