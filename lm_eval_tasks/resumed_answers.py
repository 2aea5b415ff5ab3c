"""Of the tasks a cut left open, how many a later turn answered, and how many of those
answers are right: from lm-eval's logged samples (``--log_samples``), interrupted sessions.

``resumption_rate`` counts a tag with any answer in it. A policy trained to go back can
learn the tag and write another task's answer inside it (run 12 in RESULTS.md: three in
four of its resumed answers were wrong, against one in three of its own-turn answers), so
this prints the two side by side, with the own-turn accuracy as the model's reference.

The closing turn gets a line of its own: how many closed answers it writes, how many of
them go to a task still open, and which task its first answer names, beside how often
each task was open. A model that copies a closing turn's shape instead of looking for
what is open shows it here: one answer per closing turn, at the same task whether that
task is open or not (RESULTS.md, "Run 16").

    python -m lm_eval_tasks.resumed_answers out/before_after/base out/before_after/adapter
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from interrupt_bench.tags import parse_turn
from lm_eval_tasks.figures import logged_sessions


@dataclass
class ResumedAnswers:
    cut_open: int = 0  # tasks whose own turn was cut before a closed answer
    resumed: int = 0  # of those, answered in a later turn
    resumed_right: int = 0  # of those, answered right
    own_turn: int = 0  # tasks answered in their own turn
    own_turn_right: int = 0

    def line(self) -> str:
        right = self.resumed_right / self.resumed if self.resumed else float("nan")
        own = self.own_turn_right / self.own_turn if self.own_turn else float("nan")
        return (
            f"cut and open {self.cut_open}, answered later {self.resumed}, right "
            f"{self.resumed_right} ({right:.3f}); answered in their own turn {self.own_turn}, "
            f"right {own:.3f}"
        )


@dataclass
class ClosingTurns:
    turns: int = 0  # interrupted sessions with a closing turn
    with_open: int = 0  # of those, with a task left without a closed answer before it
    answers: int = 0  # closed answers the closing turns write
    at_open: int = 0  # of those, to a task still open
    first_at: dict[int, int] = field(default_factory=dict)  # task of a turn's first answer
    first_at_open: dict[int, int] = field(default_factory=dict)  # sessions with task k open

    def line(self) -> str:
        per_turn = self.answers / self.turns if self.turns else float("nan")
        tasks = sorted(set(self.first_at) | set(self.first_at_open))
        first = ", ".join(
            f"{k}: {self.first_at.get(k, 0)} (open in {self.first_at_open.get(k, 0)})"
            for k in tasks
        )
        return (
            f"closing turns {self.turns}, {self.with_open} with a task open; closed answers "
            f"{self.answers} ({per_turn:.2f} a turn), {self.at_open} to an open task; "
            f"first answer at task {first or '-'}"
        )


def closing_turns(samples_path: Path) -> ClosingTurns:
    """What the closing turns of the interrupted sessions of one ``--log_samples`` file
    answer, against what was open when they began."""
    out = ClosingTurns()
    for session in logged_sessions(samples_path):
        if session.get("condition", "interrupted") != "interrupted":
            continue
        n_tasks, outputs, cut = len(session["verdicts"]), session["outputs"], session["cut"]
        if len(outputs) <= n_tasks:
            continue
        closed = {
            k
            for text, c in zip(outputs[:n_tasks], cut)
            for k, _ in parse_turn(text, c is not False).answers()
        }
        still_open = set(range(1, n_tasks + 1)) - closed
        answered = [k for k, _ in parse_turn(outputs[n_tasks], cut[n_tasks] is not False).answers()]
        out.turns += 1
        out.with_open += bool(still_open)
        out.answers += len(answered)
        out.at_open += sum(k in still_open for k in answered)
        for k in still_open:
            out.first_at_open[k] = out.first_at_open.get(k, 0) + 1
        if answered:
            out.first_at[answered[0]] = out.first_at.get(answered[0], 0) + 1
    return out


def count(samples_path: Path) -> ResumedAnswers:
    """The counts over every interrupted session of one ``--log_samples`` file."""
    out = ResumedAnswers()
    for session in logged_sessions(samples_path):
        if session.get("condition", "interrupted") != "interrupted":
            continue
        for v in session["verdicts"]:
            if v["answered_in_own_turn"]:
                out.own_turn += 1
                out.own_turn_right += v["correct"]
            elif session["cut"][v["task_id"] - 1] is not False:  # None: unknown, as cut
                out.cut_open += 1
                if v["answered_later"]:
                    out.resumed += 1
                    out.resumed_right += v["correct"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="samples files or folders of them")
    args = parser.parse_args(argv)
    for path in args.paths:
        files = sorted(path.rglob("samples_*.jsonl")) if path.is_dir() else [path]
        if not files or not files[0].exists():
            raise SystemExit(f"no lm-eval samples_*.jsonl under {path}: run lm_eval --log_samples")
        for f in files:
            print(f"{f}: {count(f).line()}")
            print(f"  {closing_turns(f).line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
