"""``lm_eval_tasks/resumed_answers.py`` counts, from lm-eval's logged samples, the tasks a cut
left open, those a later turn answered, and those answered right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lm_eval_tasks.resumed_answers import closing_turns, count, main


def _verdict(task_id, correct, own, later):
    return {"task_id": task_id, "correct": correct, "answered_in_own_turn": own,
            "answered_later": later}  # fmt: skip


SESSIONS = [
    {  # task 1 answered in its turn; 2 cut, resumed right; 3 cut, resumed wrong;
        # 4 cut, never answered; 5 not cut and not answered (deferred, not counted)
        "condition": "interrupted",
        "cut": [False, True, True, None, False, False],
        "outputs": [
            "<answer task=1>a</answer>",
            "<answer task=2>",
            "<ans",
            "",
            "",
            "<answer task=2>b</answer>\n<answer task=3>x</answer>\n<answer task=1>a</answer>",
        ],
        "verdicts": [
            _verdict(1, True, True, False),
            _verdict(2, True, False, True),
            _verdict(3, False, False, True),
            _verdict(4, False, False, False),
            _verdict(5, False, False, False),
        ],
    },
    {  # the same episode with no cuts: not counted
        "condition": "nocut",
        "cut": [False] * 6,
        "verdicts": [_verdict(k, True, True, False) for k in range(1, 6)],
    },
]


def _samples(path: Path) -> Path:
    """One document logged once per filter, as lm-eval writes it."""
    resps = [[json.dumps({"sessions": SESSIONS})]]
    path.write_text("".join(json.dumps({"filter": f, "resps": resps}) + "\n"
                            for f in ("flexible", "strict")))  # fmt: skip
    return path


def test_counts_cut_tasks_resumed_and_right_once_per_document(tmp_path):
    got = count(_samples(tmp_path / "samples_t_2026-12-07T00-00-00.jsonl"))
    assert (got.cut_open, got.resumed, got.resumed_right) == (3, 2, 1)
    assert (got.own_turn, got.own_turn_right) == (1, 1)
    assert "answered later 2, right 1 (0.500)" in got.line()


def test_closing_turn_answers_against_what_was_open(tmp_path):
    """Tasks 2-5 are open when the closing turn begins (5 deferred, not cut); it answers
    2 and 3, then re-answers task 1: three answers, two to open tasks, the first at 2."""
    got = closing_turns(_samples(tmp_path / "samples_t_2026-12-07T00-00-00.jsonl"))
    assert (got.turns, got.with_open, got.answers, got.at_open) == (1, 1, 3, 2)
    assert got.first_at == {2: 1}
    assert got.first_at_open == {2: 1, 3: 1, 4: 1, 5: 1}
    assert "closed answers 3 (3.00 a turn), 2 to an open task" in got.line()
    assert "first answer at task 2: 1 (open in 1), 3: 0 (open in 1)" in got.line()


def test_cli_reads_folders_and_names_one_without_samples(tmp_path, capsys):
    _samples(tmp_path / "samples_t_2026-12-07T00-00-00.jsonl")
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "cut and open 3" in out and "closing turns 1, 1 with a task open" in out
    with pytest.raises(SystemExit, match="no lm-eval samples"):
        main([str(tmp_path / "empty")])
