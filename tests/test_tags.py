import pytest

from interrupt_bench.tags import parse_turn


@pytest.mark.parametrize(
    "text",
    [
        "<answer task=3>x</answer>",
        '<answer task="3">x</answer>',
        "<answer task='3'>x</answer>",
        '<ANSWER  Task = "3" >x</Answer >',
        "<answer\ttask=3\n>x</answer>",
    ],
)
def test_tag_spellings_are_equivalent(text):
    parsed = parse_turn(text)
    assert parsed.answers() == [(3, "x")]
    assert parsed.well_formed


def test_lt_followed_by_whitespace_is_text():
    parsed = parse_turn("5 < answer task=2> 3 <answer task=1>yes</answer>")
    assert parsed.answers() == [(1, "yes")]
    assert parsed.attempted() == {1}


def test_cut_answer_is_attempt_not_answer():
    parsed = parse_turn("<answer task=2>Hel", cut=True)
    assert parsed.attempted() == {2}
    assert parsed.answers() == []
    assert not parsed.well_formed  # only an unclosed *thinking* is excused by the cut


def test_unclosed_thinking_at_end_of_cut_turn_is_well_formed():
    assert parse_turn("<thinking task=1>so far", cut=True).well_formed
    assert not parse_turn("<thinking task=1>so far", cut=False).well_formed


def test_half_written_tag_at_cut_is_tolerated():
    parsed = parse_turn("<answer task=1>7</answer><answer task", cut=True)
    assert parsed.answers() == [(1, "7")]
    assert parsed.well_formed
    assert parse_turn("<answer task=1>7</answer></ans", cut=True).well_formed
    assert not parse_turn("<answer task=1>7</answer><answ", cut=False).well_formed


def test_nested_and_stray_tags_are_malformed_but_parsed():
    parsed = parse_turn("<thinking task=1>hmm <answer task=1>4</answer></thinking>")
    assert parsed.answers() == [(1, "4")]
    assert not parsed.well_formed
    assert any("not closed" in p for p in parsed.problems)
    assert any("closes nothing" in p for p in parsed.problems)


@pytest.mark.parametrize(
    "raw", ["abc", "", "1.5", "x1", "-1", "+1", '" 1 "', "' 1'", "١", "１", "٣", "1\u00a0"]
)
def test_non_integer_task_ids_are_ignored_and_malformed(raw):
    parsed = parse_turn(f"<answer task={raw}>4</answer>")
    assert parsed.answers() == []
    assert not parsed.well_formed


def test_zero_and_huge_ids_parse_as_integers():
    parsed = parse_turn("<answer task=0>a</answer><answer task=999>c</answer>")
    assert parsed.answers() == [(0, "a"), (999, "c")]


def test_ascii_whitespace_around_equals_and_quotes_stay_allowed():
    for text in ('<answer task = "1">x</answer>', "<answer task=\t'1' >x</answer>"):
        assert parse_turn(text).answers() == [(1, "x")] and parse_turn(text).well_formed


def test_closing_tag_with_attributes_closes_nothing():
    parsed = parse_turn("<answer task=1>42</answer task=1>", cut=False)
    assert parsed.answers() == []  # the answer stays open: not an answer
    assert parsed.attempted() == {1}
    assert any("closes nothing" in p for p in parsed.problems)


def test_last_answer_wins_order_kept():
    parsed = parse_turn("<answer task=1>3</answer> text <answer task=1>4</answer>")
    assert parsed.answers() == [(1, "3"), (1, "4")]


def test_question_tags_in_output_are_plain_text():
    parsed = parse_turn("<question task=1>echo</question><answer task=1>2</answer>")
    assert parsed.answers() == [(1, "2")] and parsed.well_formed


def test_non_string_input_does_not_raise():
    assert parse_turn(None).spans == ()
