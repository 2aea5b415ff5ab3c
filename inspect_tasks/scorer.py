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
from interrupt_bench.costs import paired_metrics
from interrupt_bench.episodes import Episode
from interrupt_bench.records import episode_items
from interrupt_bench.scoring import lm_eval_metrics, ratio_of_sums, score_episode


@metric(scores="unreduced")
def ratio(key: str) -> Metric:
    """Sum of numerators over sum of denominators of ``key`` (lm-eval's ``utils.ratio``):
    the pairs are in each score's ``metadata["ratios"]``.

    With ``--epochs N`` the sums run over every epoch of every sample, as lm-eval's run
    over every document: Inspect's epoch reducer keeps the first epoch's metadata only,
    so the metric asks for the scores before reduction (``scores="unreduced"``)."""

    def compute(scores: list[SampleScore]) -> float:
        return ratio_of_sums(
            (s.score.metadata or {}).get("ratios", {}).get(key, (0, 0)) for s in scores
        )

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


@scorer(metrics=task_metrics("default", paired=False))
def interrupt_bench_scorer(flexible: bool = False) -> Scorer:
    """``score_episode`` on the played sessions (``flexible``: the lm-eval ``flexible``
    filter, which also credits an untagged turn holding the right answer)."""

    async def score(state: TaskState, target: Target) -> Score:
        sessions = state.store.get(STORE_KEY)
        items = episode_items(sessions, flexible)
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
