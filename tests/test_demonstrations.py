"""Few-shot demonstrations: which oracle sessions may teach a model the protocol."""

from __future__ import annotations

import pytest

from interrupt_bench import demonstrations
from interrupt_bench.config import CONFIGS, get_config
from interrupt_bench.episodes import generate_episode
from interrupt_bench.errors import ConfigError
from interrupt_bench.session import Transcript


def _transcript(outputs: list[str], config: str = "tasks2_budget0to100") -> Transcript:
    episode = generate_episode(get_config(config), "train", 1)
    for k, task in enumerate(episode.tasks, start=1):
        outputs = [o.replace(f"ANSWER{k}", task.answer) for o in outputs]
    return Transcript(episode, outputs, [True] * len(outputs), [None] * len(outputs))


def test_visible_cut_wants_the_opening_tag_and_some_of_the_answer():
    resumed = "<answer task=1>ANSWER1</answer>"
    assert demonstrations.shows_visible_cut(_transcript(["<answer task=1>x", resumed, ""]))
    for cut in ("", "<answer", "<answer task=1>"):  # nothing of the answer is visible
        assert not demonstrations.shows_visible_cut(_transcript([cut, resumed, ""])), cut


def test_a_cut_to_nothing_or_inside_the_tag_counts_as_left_open():
    resumed = "<answer task=1>ANSWER1</answer>"
    for cut in ("", "<answer", "<answer task=1>"):
        t = _transcript([cut, resumed, ""])
        assert demonstrations.cut_and_resumed(t) == [(1, 2)], cut
        assert demonstrations.resumes_in_question_turn(t)
        assert not demonstrations.closing_answers(t)
    closing = _transcript(["", "<answer task=2>ANSWER2</answer>", resumed])
    assert demonstrations.resumes_in_closing_turn(closing)
    assert demonstrations.closing_answers(closing)
    assert not demonstrations.resumes_in_question_turn(closing)
    uncut = Transcript(closing.episode, closing.outputs, [False, True, True], [None] * 3)
    assert demonstrations.cut_and_resumed(uncut) == []  # deferred on purpose is no cut


def test_pick_follows_the_rule_in_seed_order():
    config = get_config("tasks2_budget0to100")
    train = [generate_episode(config, "train", i) for i in range(200)]
    for rule in demonstrations.RULES:
        picked = demonstrations.pick(train, 2, rule=rule)
        assert all(demonstrations.satisfies(t, rule) for t in picked), rule
        again = demonstrations.pick(train, 2, rule=rule)  # fixed seed: the same picks
        assert [t.episode.episode_id for t in again] == [t.episode.episode_id for t in picked]
    never_cut = [generate_episode(get_config("tasks2_budget50to200"), "train", i)
                 for i in range(5)]  # fmt: skip
    assert len(demonstrations.pick(never_cut, 2)) == 2  # format-only demonstrations


def test_an_unknown_rule_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match=r"fewshot_rule 'sideways'.*resume_and_close"):
        demonstrations.pick([], 1, rule="sideways")


@pytest.mark.parametrize("seed", [1234, 4242, 7])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_default_demonstration_resumes_a_cut_task_and_closes_on_every_build(name, seed):
    """On every shipped config whose budgets can cut an answer, and whatever seed the
    dataset was built with, the default demonstration leaves a task open by a cut,
    answers it later and ends in a closing turn that answers something."""
    config = get_config(name)
    train = [generate_episode(config, "train", i, base_seed=seed) for i in range(400)]
    (shot,) = demonstrations.pick(train, 1)
    if config.budget_lo >= 50:  # budgets 50-200 never cut the oracle's short answers
        assert not demonstrations.cut_and_resumed(shot)
        return
    assert demonstrations.cut_and_resumed(shot), (name, seed)
    assert demonstrations.closing_answers(shot), (name, seed)
