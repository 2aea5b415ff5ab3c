"""Pictures a person would rather look at than read: accuracy and re-attempt rate by the
task's own turn budget and by task family, from lm-eval's logged samples; the paired
costs of interruption of each tier, from lm-eval's results."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from interrupt_bench.costs import BUDGET_BINS, bin_name


def _bin_label(lo: int, hi: int | None) -> str:
    """``0``, ``1–15``, ``101+``: a budget bin of :data:`interrupt_bench.costs.BUDGET_BINS`."""
    return bin_name(lo, hi).removeprefix("budget").replace("to", "–").replace("plus", "+")


def _save(fig, png: Path, title: str) -> Path:
    """Title, lay out, write and close a figure."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def logged_sessions(samples_path: Path) -> Iterator[dict]:
    """Every session transcript of a ``--log_samples`` file, in document order. lm-eval
    logs each document once per filter, with the same transcript; only the strict copy
    (``none`` where the task has no filters) is read, so each session comes once."""
    for line in Path(samples_path).read_text().splitlines():
        sample = json.loads(line)
        if sample.get("filter", "strict") in ("strict", "none"):
            resp = sample["resps"][0]
            yield from json.loads(resp[0] if isinstance(resp, list) else resp)["sessions"]


def logged_task_rows(samples_path: Path) -> list[dict]:
    """One row per task of every logged session: family, own-turn budget, verdicts under
    both filters (the flexible verdict scored from the strict copy's transcript)."""
    from interrupt_bench.episodes import Episode
    from interrupt_bench.scoring import score_episode

    rows = []
    for session in logged_sessions(samples_path):
        budgets = session["budgets"]
        episode = Episode.from_row(session["row"])
        loose = score_episode(episode, session["outputs"], session["cut"], flexible=True)
        for verdict, flexible in zip(session["verdicts"], loose.verdicts):
            k = verdict["task_id"]
            rows.append(
                {
                    "family": verdict["family"],
                    "budget": budgets[k - 1],
                    "correct": verdict["correct"],
                    "correct_flexible": flexible.correct,
                    "reattempted": any(t > k for t in verdict["attempt_turns"]),
                }
            )
    return rows


def plot_by_budget_and_family(samples_path: Path, png: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = logged_task_rows(samples_path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    bars = {"correct": "accuracy (strict)", "correct_flexible": "accuracy (flexible)",
            "reattempted": "re-attempted later"}  # fmt: skip
    labels, counts, values = [], [], {key: [] for key in bars}
    for lo, hi in BUDGET_BINS:
        chosen = [r for r in rows if lo <= r["budget"] and (hi is None or r["budget"] <= hi)]
        if chosen:
            labels.append(_bin_label(lo, hi))
            counts.append(len(chosen))
            for key in bars:
                values[key].append(sum(r[key] for r in chosen) / len(chosen))
    x = range(len(labels))
    for j, (key, name) in enumerate(bars.items()):
        left.bar([i + 0.27 * (j - 1) for i in x], values[key], width=0.27, label=name)
    left.set_xticks(list(x), [f"{lab}\n(n={n})" for lab, n in zip(labels, counts)], fontsize=8)
    left.set_xlabel("budget of the task's own turn (tokens)")
    left.set_ylim(0, 1)
    left.set_title("by turn budget")
    left.legend(fontsize=8)
    by_family = defaultdict(list)
    for r in rows:
        by_family[r["family"]].append(r)
    families = sorted(by_family)
    for j, (key, name) in enumerate(bars.items()):
        right.bar(
            [i + 0.27 * (j - 1) for i in range(len(families))],
            [sum(r[key] for r in by_family[f]) / len(by_family[f]) for f in families],
            width=0.27,
            label=name,
        )
    right.set_xticks(range(len(families)), families)
    right.set_ylim(0, 1)
    right.set_title("by task family")
    right.legend(fontsize=8)
    return _save(fig, png, title)


def plot_paired_costs(results: dict[str, dict], png: Path, title: str) -> Path:
    """The paired controls of each tier side by side (``results``: tier name -> lm-eval's
    results of its controls task): accuracy interrupted, without cuts and alone, with
    stderr bars, and the interruption cost by the budget of each task's own turn. The y
    axes are scaled to the data."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def value(metrics: dict, name: str) -> tuple[float, float]:
        v, e = metrics.get(f"{name},strict", math.nan), metrics.get(f"{name}_stderr,strict")
        return float(v), float(e) if isinstance(e, (int, float)) else 0.0

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    conditions = (("accuracy", "interrupted"), ("accuracy_nocut", "no cuts"),
                  ("accuracy_single", "each task alone"))  # fmt: skip
    tiers = list(results)
    width = 0.8 / len(conditions)
    top = 0.0
    for j, (metric, label) in enumerate(conditions):
        vals = [value(results[t], metric) for t in tiers]
        xs = [i + width * (j - (len(conditions) - 1) / 2) for i in range(len(tiers))]
        left.bar(xs, [v for v, _ in vals], width=width, yerr=[e for _, e in vals],
                 capsize=3, label=label)  # fmt: skip
        top = max([top, *(v + e for v, e in vals if not math.isnan(v))])
    costs = [value(results[t], "interruption_cost") for t in tiers]
    ticks = [f"{t}\ncost {c:+.3f} ± {e:.3f}" for t, (c, e) in zip(tiers, costs)]
    left.set_xticks(range(len(tiers)), ticks)
    left.set_ylim(0, max(top * 1.15, 0.05))
    left.set_ylabel("accuracy (strict)")
    left.set_title("the same episodes, three ways")
    left.legend(fontsize=8)
    labels = [_bin_label(lo, hi) for lo, hi in BUDGET_BINS]
    width = 0.8 / max(len(tiers), 1)
    low, high = 0.0, 0.0
    for j, tier in enumerate(tiers):
        vals = [value(results[tier], f"interruption_cost_{bin_name(lo, hi)}")[0]
                for lo, hi in BUDGET_BINS]  # fmt: skip
        xs = [i + width * (j - (len(tiers) - 1) / 2) for i in range(len(labels))]
        right.bar(xs, [0.0 if math.isnan(v) else v for v in vals], width=width, label=tier)
        finite = [v for v in vals if not math.isnan(v)]
        low, high = min([low, *finite]), max([high, *finite])
    right.axhline(0, color="black", linewidth=0.6)
    right.set_xticks(range(len(labels)), labels)
    right.set_xlabel("budget of the task's own turn (tokens)")
    right.set_ylabel("interruption cost (accuracy no cuts − interrupted)")
    pad = 0.1 * max(high - low, 0.05)
    right.set_ylim(low - pad, high + pad)
    right.set_title("what the cut costs, by budget")
    right.legend(fontsize=8)
    return _save(fig, png, title)
