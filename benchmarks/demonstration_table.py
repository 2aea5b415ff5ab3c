"""The demonstration variants' table from `benchmarks/demonstration_variants.sh` output:
one row per variant (accuracy, no-cut accuracy, interruption cost with stderr; resumption,
re-attempt rate and precision (the re-attempted tasks that were open) and overwrite rate
of the interrupted sessions, counted from the logged transcripts; and the tasks the
closing turn answers most often, with the share of sessions it answers exactly those: a
share near 1 means the closing turn is copied, not chosen by what is open; and the
resumption a closing turn that always answered those tasks would get on these sessions,
the level a copied closing turn reaches without keeping track of anything), as the task
README's "Demonstrations" table.

    .venv/bin/python benchmarks/demonstration_table.py out/variants/MODEL-MODE

With ``--runs DIR...`` it prints the same columns for any lm-eval output folders of a
paired controls task (a row per folder), e.g. the before/after runs of
``training/before_after.sh``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

COLUMNS = ("accuracy", "no-cut accuracy", "interruption cost", "resumption", "re-attempt rate",
           "re-attempt precision", "overwrite rate", "closing turn answers",
           "copy level")  # fmt: skip


def cells(variant: Path) -> list[str]:
    """The columns of :data:`COLUMNS` for one lm-eval output folder."""
    (results,) = variant.rglob("results_*.json")
    (metrics,) = json.loads(results.read_text())["results"].values()

    def cell(name: str) -> str:
        value, err = metrics[f"{name},strict"], metrics.get(f"{name}_stderr,strict")
        return f"{value:.3f} ± {err:.3f}" if isinstance(err, float) else f"{value:.3f}"

    tasks = resumed = open_own = reattempted = overwritten = reattempted_open = 0
    closings: Counter[tuple[int, ...]] = Counter()
    open_ids: list[int] = []  # the task id of every task with no closed answer in its own turn
    for samples in variant.rglob("samples_*.jsonl"):
        for line in samples.read_text().splitlines():
            record = json.loads(line)
            if record["filter"] != "strict":
                continue
            sessions = json.loads(record["resps"][0][0])["sessions"]
            for session in sessions:
                if session["condition"] != "interrupted":
                    continue
                n = len(session["verdicts"])
                closings[tuple(v["task_id"] for v in session["verdicts"]
                               if n + 1 in v["attempt_turns"])] += 1  # fmt: skip
                for v in session["verdicts"]:
                    tasks += 1
                    reattempted += any(t > v["task_id"] for t in v["attempt_turns"])
                    overwritten += bool(v.get("overwritten"))
                    if not v["answered_in_own_turn"]:
                        open_own += 1
                        open_ids.append(v["task_id"])
                        resumed += v["answered_later"]
                        reattempted_open += any(t > v["task_id"] for t in v["attempt_turns"])
    ((common, count),) = closings.most_common(1)
    copied = sum(task_id in common for task_id in open_ids)
    return [
        cell("accuracy"),
        cell("accuracy_nocut"),
        cell("interruption_cost"),
        f"{resumed / max(open_own, 1):.3f} ({resumed}/{open_own})",
        f"{reattempted / tasks:.3f}",
        f"{reattempted_open / max(reattempted, 1):.3f} ({reattempted_open}/{reattempted})",
        f"{overwritten / tasks:.3f}",
        "{" + ", ".join(map(str, common)) + f"}} in {count}/{closings.total()}",
        f"{copied / max(open_own, 1):.3f} ({copied}/{open_own})",
    ]


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def main(argv: list[str]) -> None:
    if argv[0] == "--runs":
        print(table(["run", *COLUMNS], [[d, *cells(Path(d))] for d in argv[1:]]))
        return
    variants = sorted(p for p in Path(argv[0]).iterdir() if (p / "done").exists())
    rows = [[*v.name.rsplit("-", 1)[0:1], v.name.rsplit("-", 1)[1].removesuffix("shot"),
             *cells(v)] for v in variants]  # fmt: skip
    print(table(["fewshot_rule", "shots", *COLUMNS], rows))


if __name__ == "__main__":
    main(sys.argv[1:])
