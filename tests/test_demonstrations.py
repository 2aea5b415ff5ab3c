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
def test_the_default_demonstrations_resume_a_cut_task_and_close_on_every_build(name, seed):
    """On every shipped config whose budgets can cut an answer, and whatever seed the
    dataset was built with, every default demonstration leaves a task open by a cut,
    answers it later and ends in a closing turn that answers something; and
    ``track_and_close``'s second session finishes in its closing turn a cut task that is
    not the last, so its closing turns do not all answer the same task."""
    config = get_config(name)
    train = [generate_episode(config, "train", i, base_seed=seed) for i in range(400)]
    shots = demonstrations.pick(train, demonstrations.DEFAULT_SHOTS)
    first, second = demonstrations.pick(train, 2, rule="track_and_close")
    if config.budget_lo >= 50:  # budgets 50-200 never cut the policies' short answers
        assert not any(demonstrations.cut_and_resumed(t) for t in (*shots, second))
        return
    for shot in shots:
        assert demonstrations.cut_and_resumed(shot), (name, seed)
        assert demonstrations.closing_answers(shot), (name, seed)
    assert first.episode.episode_id == shots[0].episode.episode_id
    assert demonstrations.closes_an_earlier_task(second), (name, seed)
    if config.n_tasks > 2:  # with two tasks, both may close {1, 2}
        assert demonstrations.closed_tasks(first) != demonstrations.closed_tasks(second)
    assert first.episode.episode_id != second.episode.episode_id


def test_a_rule_plays_each_shot_with_its_own_policy():
    config = get_config("easy")
    train = [generate_episode(config, "train", i) for i in range(400)]
    first, second, third = demonstrations.pick(train, 3, rule="track_and_close")
    n = config.n_tasks
    # close_open answers every cut task only in the closing turn; the oracle comes back sooner
    assert all(turn == n + 1 for _, turn in demonstrations.cut_and_resumed(second))
    assert demonstrations.satisfies(third, "track_and_close", shot=2)  # the first's rule
    assert demonstrations.satisfies(first, "resume_and_close")
    assert len({t.episode.episode_id for t in (first, second, third)}) == 3


def test_demonstration_sets_go_rule_by_rule_each_first_set_evaluations(small_dataset):
    """Training's sets: each rule's picks with seeds 1234, 1235, ..., the first the one
    evaluation shows under that rule, and no two alike (what a pick shows:
    test_pick_follows_the_rule_in_seed_order)."""
    rules = ["resume_and_close", "close_open"]
    sets = demonstrations.demonstration_sets(str(small_dataset), "easy", 2, rules, 2)
    assert len(sets) == 4
    ids = [tuple(t.episode.episode_id for t in s) for s in sets]
    assert len(set(ids)) == 4
    for i, rule in enumerate(rules):
        shown = demonstrations.from_dataset(str(small_dataset), "easy", 2, rule=rule)
        assert ids[2 * i] == tuple(t.episode.episode_id for t in shown)
    with pytest.raises(ConfigError, match="'sideways'"):
        demonstrations.demonstration_sets(str(small_dataset), "easy", 2, ["sideways"], 1)
