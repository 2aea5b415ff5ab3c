"""Property tests: the parser and scorer never raise on arbitrary text, and the metric
invariants hold."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interrupt_bench.config import get_config
from interrupt_bench.episodes import generate_episode
from interrupt_bench.scoring import score_episode
from interrupt_bench.tags import parse_turn

IDS = st.sampled_from(
    ["0", "-1", "1", "2", "3", "999", "abc", '"2"', "'1'", "", "1.5", "99999999999"]
)
FRAGMENTS = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda k, i: f"<{k} task={i}>",
        st.sampled_from(["answer", "thinking", "ANSWER", "Thinking"]),
        IDS,
    ),
    st.sampled_from(
        [
            "</answer>",
            "</thinking>",
            "<",
            ">",
            "< answer task=1>",
            "<answer",
            "<answer task=1",
            "</ans",
            "<answer>",
            "</answer task=2>",
            "<thinking task=1 task=2>",
            "\n",
            "\x00",
        ]
    ),
)
TURN = st.lists(FRAGMENTS, max_size=25).map("".join)
EPISODES = [
    generate_episode(get_config(n), "test", i)
    for n in ("default", "tasks2_budget0to50")
    for i in range(3)
]


@given(st.text(max_size=2000), st.booleans())
def test_parse_never_raises_on_unicode(text, cut):
    parse_turn(text, cut)


@given(TURN, st.booleans())
def test_parse_never_raises_on_tag_soup(text, cut):
    parsed = parse_turn(text, cut)
    for task_id, _ in parsed.answers():
        assert isinstance(task_id, int)


def _outputs(data, episode):
    return [data.draw(TURN) for _ in range(episode.n_turns)]


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=150)
@given(st.data(), st.sampled_from(EPISODES))
def test_score_invariants(data, episode):
    outputs = _outputs(data, episode)
    cut = [data.draw(st.booleans()) for _ in outputs]
    score = score_episode(episode, outputs, cut)
    assert 0.0 <= score.accuracy <= 1.0
    assert 0 <= score.reattempts <= episode.n_tasks
    assert 0.0 <= score.answer_rate <= 1.0
    assert 0 <= score.resumption_num <= score.resumption_den <= episode.n_tasks
    assert 0.0 <= score.format_rate <= 1.0


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=150)
@given(st.data(), st.sampled_from(EPISODES))
def test_appending_a_correct_closed_answer_never_lowers_accuracy(data, episode):
    outputs = _outputs(data, episode)
    before = score_episode(episode, outputs).accuracy
    k = data.draw(st.integers(1, episode.n_tasks))
    outputs[-1] += f"<answer task={k}>{episode.tasks[k - 1].answer}</answer>"
    after = score_episode(episode, outputs)
    assert after.accuracy >= before
    assert after.verdicts[k - 1].correct


def test_huge_output_is_scored():
    episode = EPISODES[0]
    huge = "<thinking task=1>" + "x < y " * 200_000 + "<answer task=1>" * 1000
    score = score_episode(episode, [huge] * episode.n_turns)
    assert score.accuracy == 0.0
