"""The cost of interruption, paired over the same episodes (docs/protocol.md, "Paired
costs"). Each episode is played three ways: interrupted (its own budgets), *nocut* (every
budget raised to the controls' cap) and *single* (each task alone). Per episode:

- ``interruption_cost`` = accuracy(nocut) − accuracy(interrupted): what the cuts cost,
  with the same tasks in the same order;
- ``interleaving_cost`` = accuracy(single) − accuracy(nocut): what sharing one session
  with other tasks costs, with no cut at all;

the same two for the answer rate, and the interruption cost of the tasks whose own turn
had a budget in each of :data:`BUDGET_BINS` (a ratio over all such tasks). Means over
episodes of per-episode differences give a paired standard error, smaller than that of
two unpaired means whenever the conditions agree on which tasks are easy."""

from __future__ import annotations

from collections.abc import Sequence

from interrupt_bench.episodes import Episode
from interrupt_bench.scoring import EpisodeScore

# Budget bins of a task's own turn, in tokens (hi None: no upper end). Answers of the
# shipped families take about 8 to 40 tokens with their tags.
BUDGET_BINS: tuple[tuple[int, int | None], ...] = ((0, 0), (1, 15), (16, 50), (51, 100),
                                                   (101, None))  # fmt: skip


def bin_name(lo: int, hi: int | None) -> str:
    """``budget0``, ``budget1to15``, ``budget101plus``."""
    if hi is None:
        return f"budget{lo}plus"
    return f"budget{lo}" if lo == hi else f"budget{lo}to{hi}"


def budget_bin(budget: int) -> str:
    for lo, hi in BUDGET_BINS:
        if budget >= lo and (hi is None or budget <= hi):
            return bin_name(lo, hi)
    raise ValueError(f"budget {budget} is in no bin of {BUDGET_BINS}")


PAIRED_MEAN_METRICS = (
    "accuracy",
    "accuracy_nocut",
    "accuracy_single",
    "interruption_cost",
    "interleaving_cost",
    "answer_rate",
    "answer_rate_nocut",
    "answer_rate_single",
    "reattempt_rate",
    "overwrite_rate",
    "interruption_cost_answer_rate",
    "interleaving_cost_answer_rate",
)
PAIRED_RATIO_METRICS = (
    "resumption_rate",
    "reattempt_precision",
    *(f"interruption_cost_{bin_name(lo, hi)}" for lo, hi in BUDGET_BINS),
)


def paired_metrics() -> dict[str, str]:
    """Every metric of the paired controls task -> ``mean`` or ``ratio`` (as
    :func:`interrupt_bench.scoring.lm_eval_metrics`)."""
    return {**dict.fromkeys(PAIRED_MEAN_METRICS, "mean"),
            **dict.fromkeys(PAIRED_RATIO_METRICS, "ratio")}  # fmt: skip


def is_cost(metric: str) -> bool:
    """Whether lower is better: the costs (a negative cost is a gain)."""
    return "_cost" in f"_{metric}"


def paired_items(
    episode: Episode, interrupted: EpisodeScore, nocut: EpisodeScore, single: EpisodeScore
) -> dict[str, float | tuple[int, int]]:
    """One episode's paired metrics (lm-eval's per-document results): the three scores are
    of the same tasks, in the order of ``episode.tasks``."""
    for name, score in (("interrupted", interrupted), ("nocut", nocut), ("single", single)):
        if score.n_tasks != episode.n_tasks:
            raise ValueError(
                f"episode {episode.episode_id}: the {name} score has {score.n_tasks} tasks, "
                f"the episode {episode.n_tasks}"
            )
    out: dict[str, float | tuple[int, int]] = {
        "accuracy": interrupted.accuracy,
        "accuracy_nocut": nocut.accuracy,
        "accuracy_single": single.accuracy,
        "interruption_cost": nocut.accuracy - interrupted.accuracy,
        "interleaving_cost": single.accuracy - nocut.accuracy,
        "answer_rate": interrupted.answer_rate,
        "answer_rate_nocut": nocut.answer_rate,
        "answer_rate_single": single.answer_rate,
        "reattempt_rate": interrupted.reattempt_rate,
        "overwrite_rate": interrupted.overwrite_rate,
        "interruption_cost_answer_rate": nocut.answer_rate - interrupted.answer_rate,
        "interleaving_cost_answer_rate": single.answer_rate - nocut.answer_rate,
        "resumption_rate": (interrupted.resumption_num, interrupted.resumption_den),
        "reattempt_precision": (interrupted.reattempts_open, interrupted.reattempts),
    }
    by_bin = {bin_name(lo, hi): [0, 0] for lo, hi in BUDGET_BINS}
    for budget, cut, free in zip(episode.budgets, interrupted.verdicts, nocut.verdicts):
        counts = by_bin[budget_bin(budget)]
        counts[0] += int(free.correct) - int(cut.correct)
        counts[1] += 1
    for name, (num, den) in by_bin.items():
        out[f"interruption_cost_{name}"] = (num, den)
    return out


def split_by_condition(
    labelled: Sequence[tuple[str, EpisodeScore]],
) -> dict[str, list[EpisodeScore]]:
    """Scores of one episode's sessions grouped by the condition each was played under."""
    groups: dict[str, list[EpisodeScore]] = {}
    for condition, score in labelled:
        groups.setdefault(condition, []).append(score)
    return groups
