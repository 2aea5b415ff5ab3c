"""What a person wants to see after a build: counts per config and split (read back
through ``datasets.load_dataset``), one episode, and what the reference policies score."""

from __future__ import annotations

import os
from pathlib import Path

from interrupt_bench.dataset import load_episodes, load_rows, read_build_info
from interrupt_bench.errors import DatasetError
from interrupt_bench.policies import POLICIES, policy_responder
from interrupt_bench.scoring import aggregate
from interrupt_bench.session import replay

SPLIT_ORDER = ("train", "validation", "test")


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def build_info(path: str | os.PathLike) -> dict:
    """The directory's build record, checked (``read_build_info``)."""
    info = read_build_info(Path(path))
    if info is None:
        raise DatasetError(
            f"{path} has no build_info.json, so it is not a directory written by "
            "`python -m dataset_builder build --out DIR`; build one there first"
        )
    return info


def summarise(path: str | os.PathLike, configs: list[str] | None = None) -> str:
    import datasets

    datasets.disable_progress_bars()
    info = build_info(path)
    configs = configs or list(info["configs"])
    rows = []
    for name in configs:
        c = info["configs"][name]
        counts = [len(load_rows(path, name, s)) if s in c["counts"] else "-" for s in SPLIT_ORDER]
        budgets = f"{c['budget_lo']}-{c['budget_hi']}"
        rows.append([name, c["n_tasks"], budgets, c["closing_budget"], *counts])
    header = ["config", "tasks", "budgets", "closing", *SPLIT_ORDER]
    out = [
        f"dataset at {path} (generator {info['generator_version']}, seed {info['seed']})",
        "",
        markdown_table(header, rows),
    ]
    example = "default" if "default" in configs else configs[0]
    split = "test" if "test" in info["configs"][example]["counts"] else SPLIT_ORDER[0]
    episodes = load_episodes(path, example, split)
    ep = episodes[0]
    out += ["", f"example episode {ep.episode_id} (question -> canonical answer):"]
    for k, (task, budget) in enumerate(zip(ep.tasks, ep.budgets), start=1):
        out.append(f"  turn {k} budget {budget:>3}: {task.question}  -> {task.answer}")
    if ep.closing_budget:
        out.append(f"  closing budget {ep.closing_budget:>3}: finish every unfinished task")
    policy_rows = []
    for policy in POLICIES:
        m = aggregate([t.score() for t in replay(episodes, policy_responder(policy))])
        policy_rows.append(
            [
                policy,
                f"{m['accuracy']:.3f} ± {m['accuracy_stderr']:.3f}",
                f"{m['reattempts']:.2f}",
                f"{m['answer_rate']:.3f}",
                f"{m['resumption_rate']:.3f}",
                f"{m['format_rate']:.3f}",
            ]
        )
    out += [
        "",
        f"reference policies on {example}/{split} ({len(episodes)} episodes, "
        "budgets counted in whitespace-separated tokens):",
        markdown_table(
            ["policy", "accuracy", "reattempts", "answer_rate", "resumption_rate", "format_rate"],
            policy_rows,
        ),
    ]
    return "\n".join(out)
