"""Few-shot demonstrations: which oracle sessions may teach a model the protocol."""

from __future__ import annotations

from interrupt_bench import demonstrations
from interrupt_bench.config import get_config
from interrupt_bench.episodes import generate_episode
from interrupt_bench.session import Transcript


def _transcript(outputs: list[str]) -> Transcript:
    episode = generate_episode(get_config("tasks2_budget0to100"), "train", 1)
    answer = episode.tasks[0].answer
    outputs = [o.replace("ANSWER", answer) for o in outputs]
    return Transcript(episode, outputs, [True] * len(outputs), [None] * len(outputs))


def test_a_demonstration_shows_the_opening_tag_and_some_of_the_answer():
    resumed = "<answer task=1>ANSWER</answer>"
    assert demonstrations.shows_resumption(_transcript(["<answer task=1>x", resumed, ""]))
    for cut in ("", "<answer", "<answer task=1>"):  # nothing of the answer is visible
        assert not demonstrations.shows_resumption(_transcript([cut, resumed, ""])), cut


def test_pick_prefers_resumptions_in_seed_order_and_fills_with_the_rest():
    config = get_config("tasks2_budget0to100")
    train = [generate_episode(config, "train", i) for i in range(40)]
    picked = demonstrations.pick(train, 3)
    shows = [demonstrations.shows_resumption(t) for t in picked]
    assert shows[0] and shows == sorted(shows, reverse=True)  # resumptions first
    assert [t.episode.episode_id for t in demonstrations.pick(train, 3)] == [
        t.episode.episode_id for t in picked
    ]  # fixed seed: the same demonstrations every time
    never_cut = [generate_episode(get_config("tasks2_budget50to200"), "train", i)
                 for i in range(5)]  # fmt: skip
    assert len(demonstrations.pick(never_cut, 2)) == 2  # format-only demonstrations
