"""The lm-eval task's metrics, per sample, from the protocol's scorer.

Each sample's score is a dict under the lm-eval metric names (``accuracy``,
``reattempts``, ``answer_rate``, ...; the paired costs for the controls), computed by
``score_episode`` on the sessions the solver played. lm-eval averages some of them over
episodes and sums others as ratios (the resumption rate and the per-family accuracies
weigh every task, not every episode); here the means get Inspect's ``mean()`` and
``stderr()`` (of the epoch-reduced scores), and each ratio gets :func:`ratio`, which sums
the numerators and the denominators the sample's metadata carries over every sample and
every epoch, so both harnesses report the same number."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from inspect_ai.scorer import (
    Metric,
    SampleScore,
    Score,
    Scorer,
    Target,
    mean,
    metric,
    scorer,
    stderr,
)
from inspect_ai.solver import TaskState

from inspect_tasks.solver import STORE_KEY
from interrupt_bench.config import families_of
from interrupt_bench.costs import paired_items, paired_metrics, split_by_condition
from interrupt_bench.episodes import Episode
from interrupt_bench.scoring import lm_eval_metrics, merge_scores, score_episode


@metric(scores="unreduced")
def ratio(key: str) -> Metric:
    """Sum of numerators over sum of denominators of ``key`` (lm-eval's ``utils.ratio``):
    the pairs are in each score's ``metadata["ratios"]``.

    With ``--epochs N`` the sums run over every epoch of every sample, as lm-eval's run
    over every document: Inspect's epoch reducer keeps the first epoch's metadata only,
    so the metric asks for the scores before reduction (``scores="unreduced"``)."""

    def compute(scores: list[SampleScore]) -> float:
        num = den = 0.0
        for s in scores:
            a, b = (s.score.metadata or {}).get("ratios", {}).get(key, (0, 0))
            num, den = num + a, den + b
        return num / den if den else math.nan

    return compute


def metric_names(config: str, paired: bool) -> dict[str, str]:
    """The lm-eval task's metrics -> ``mean`` or ``ratio``."""
    return paired_metrics() if paired else lm_eval_metrics(families_of(config))


def task_metrics(config: str, paired: bool) -> dict[str, list[Metric]]:
    """Inspect metrics for every metric of the lm-eval task of ``config``."""
    return {
        name: [mean(), stderr()] if how == "mean" else [ratio(name)]
        for name, how in metric_names(config, paired).items()
    }


def sample_items(sessions: Sequence[dict[str, Any]], flexible: bool) -> dict[str, Any]:
    """lm-eval's ``process_results`` for one episode's played sessions."""
    by_condition = split_by_condition(
        (
            s["condition"],
            score_episode(Episode.from_row(s["row"]), s["outputs"], s["cut"], flexible=flexible),
        )
        for s in sessions
    )
    merged = {c: merge_scores(scores) for c, scores in by_condition.items()}
    if len(merged) > 1:
        episode = Episode.from_row(sessions[0]["row"])
        return paired_items(episode, merged["interrupted"], merged["nocut"], merged["single"])
    (score,) = merged.values()
    return score.items(families_of(sessions[0]["row"]["config"]))


@scorer(metrics=task_metrics("default", paired=False))
def interrupt_bench_scorer(flexible: bool = False) -> Scorer:
    """``score_episode`` on the played sessions (``flexible``: the lm-eval ``flexible``
    filter, which also credits an untagged turn holding the right answer)."""

    async def score(state: TaskState, target: Target) -> Score:
        sessions = state.store.get(STORE_KEY)
        items = sample_items(sessions, flexible)
        value = {k: v if not isinstance(v, tuple) else (v[0] / v[1] if v[1] else math.nan)
                 for k, v in items.items()}  # fmt: skip
        ratios = {k: list(v) for k, v in items.items() if isinstance(v, tuple)}
        first = sessions[0]
        verdicts = score_episode(
            Episode.from_row(first["row"]), first["outputs"], first["cut"], flexible=flexible
        ).verdicts
        return Score(
            value=value,
            answer=" | ".join(f"{v.task_id}: {v.final_answer}" for v in verdicts),
            explanation="\n".join(
                f"task {v.task_id} ({v.family}): expected {v.expected!r}, answered "
                f"{v.final_answer!r} -> {'right' if v.correct else 'wrong'}"
                for v in verdicts
            ),
            metadata={"ratios": ratios, "verdicts": [v.to_dict() for v in verdicts]},
        )

    return score
