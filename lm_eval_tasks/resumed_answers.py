"""Of the tasks a cut left open, how many a later turn answered, and how many of those
answers are right: from lm-eval's logged samples (``--log_samples``), interrupted sessions.

``resumption_rate`` counts a tag with any answer in it. A policy trained to go back can
learn the tag and write another task's answer inside it (run 12 in RESULTS.md: three in
four of its resumed answers were wrong, against one in three of its own-turn answers), so
this prints the two side by side, with the own-turn accuracy as the model's reference.

    python -m lm_eval_tasks.resumed_answers out/before_after/base out/before_after/adapter
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
