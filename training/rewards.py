"""Rewards and baselines for REINFORCE, as plain functions of the core's episode score.

The default reward is the paper's: accuracy. Shaping terms can be added with weights:
re-attempts (going back to earlier tasks), resumption (a closed answer, later, to a task
left unanswered in its own turn), format (well-formed turns) and answering each task once
(a closed answer for every task, and no more than one).

The re-attempt term pays for any tag naming an earlier task, finished or not, right or
wrong; a policy that cannot tell open tasks from finished ones learns to tag a random
earlier task (the small reference model wrote ``<answer task=3>banana</answer>`` in the
closing turn). The resumption term pays only for coming back to a task that was open, so
it rewards telling the two apart.

It still pays for *choosing* to leave a task open: on SmolLM2-135M-Instruct, 100 steps
with it learned to answer every task one turn late (RESULTS.md, "REINFORCE on
SmolLM2"). The cut-resumption term closes that door: it pays only for tasks whose own
turn the token budget cut, which the policy cannot choose except by writing past the
budget (and that costs it the turn's own answer). It pays for the tag, right or wrong: a
policy it taught tags the cut task and writes another task's answer in it (three in four
of run 12's resumed answers on held-out episodes were wrong, against one in three of its
own-turn answers). The cut-resumption-correct term pays only for a right one.

The closed re-attempts term counts the other side of ``reattempt_precision``: re-attempts
at tasks their own turn already answered. With a negative weight it charges them, so a
policy that goes back pays for going back to the wrong task (run 3 in RESULTS.md learned
to re-tag tasks wholesale when only resumption was paid).

Every term above is one number per session, so its advantage reaches every token of the
session alike, and the few tokens that chose which task to go back to share it with a
thousand others. :func:`tag_credits` scores that choice where it is made: per assistant
turn, +1 for each interrupted task it goes back to while it is still open, -1 for each
it goes back to after it was answered, and -1 for leaving its own task unanswered when
nothing cut it; :func:`turn_advantages` compares each turn with the same turn
of the episode's other samples, and the loss adds the result to that turn's tokens only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from interrupt_bench.scoring import EpisodeScore
from interrupt_bench.tags import parse_turn

BASELINES = ("rloo", "group_mean", "running_mean", "none")


@dataclass(frozen=True)
class RewardWeights:
    accuracy: float = 1.0
    reattempts: float = 0.0
    format: float = 0.0
    answer_once: float = 0.0
    resumption: float = 0.0
    cut_resumption: float = 0.0
    cut_resumption_correct: float = 0.0
    closed_reattempts: float = 0.0


def answer_once_rate(score: EpisodeScore) -> float:
    """Fraction of tasks with exactly one closed answer."""
    return sum(v.answer_count == 1 for v in score.verdicts) / score.n_tasks


def resumed_rate(score: EpisodeScore) -> float:
    """Tasks left unanswered in their own turn and answered later, per task of the episode
    (per task, not per open task, so that an episode with nothing open is not noise)."""
    return score.resumption_num / score.n_tasks


def cut_resumed_rate(
    score: EpisodeScore, cut: Sequence[bool | None], correct_only: bool = False
) -> float:
    """Tasks whose own turn the budget cut before a closed answer, answered later, per task
    of the episode; with ``correct_only``, answered later and right. ``cut`` is the
    transcript's, one per turn (None, unknown: counted as cut, as the scorer does). A task
    its own turn left unanswered without being cut was deferred, not interrupted, and earns
    nothing here."""
    if len(cut) < score.n_tasks:
        raise ValueError(f"cut holds {len(cut)} turns; the episode has {score.n_tasks} tasks")
    return (
        sum(
            v.answered_later
            and not v.answered_in_own_turn
            and cut[v.task_id - 1] is not False
            and (v.correct or not correct_only)
            for v in score.verdicts
        )
        / score.n_tasks
    )


def closed_reattempt_rate(score: EpisodeScore) -> float:
    """Re-attempts at tasks whose own turn closed an answer, per task of the episode
    (``reattempts - reattempts_open``: the re-attempts ``reattempt_precision`` counts
    against)."""
    return (score.reattempts - score.reattempts_open) / score.n_tasks


def tag_credits(outputs: Sequence[str], cut: Sequence[bool | None], n_tasks: int) -> list[float]:
    """Per assistant turn (closing turn last), the credit for where it went:

    - +1 for each earlier task it tags (answer or thinking tag) that has no closed answer
      yet and whose own turn the budget cut: a return to an interrupted task;
    - -1 for each earlier task it tags that already has a closed answer;
    - -1 when it is a question turn that ended on its own (not cut) without a closed
      answer to its own task: the deferral is charged in the turn that chose it.

    Going back to a task deferred on purpose earns nothing, so writing each answer a turn
    late does not pay (run 7 in RESULTS.md learned exactly that when it did). Turn i is
    task i's own turn; tags at tasks not yet asked count nothing. ``cut``: the
    transcript's per-turn flags (None, unknown: counted as cut, as the scorer does)."""
    if len(cut) != len(outputs):
        raise ValueError(f"cut holds {len(cut)} turns; the transcript has {len(outputs)}")
    was_cut = [c is not False for c in cut]
    closed: set[int] = set()
    credits = []
    for i, (text, c) in enumerate(zip(outputs, was_cut)):
        parsed = parse_turn(text, c)
        answered = {k for k, _ in parsed.answers()}
        credit = 0.0
        for k in parsed.attempted():
            if k <= i:  # an earlier task (turn i+1 is task i+1's own)
                credit += -1 if k in closed else 1 if was_cut[k - 1] else 0
        if i < n_tasks and not c and i + 1 not in answered:
            credit -= 1
        credits.append(credit)
        closed |= answered
    return credits


def turn_advantages(credits: Sequence[Sequence[float]], group_size: int) -> list[list[float]]:
    """Each session's per-turn credits minus the mean of the same turn over the other
    samples of its episode: :func:`advantages` with ``rloo``, turn by turn (groups of
    ``group_size``, contiguous; the sessions of one episode have the same turns). A turn
    that every sample handles alike gets 0."""
    out: list[list[float]] = []
    for g in range(0, len(credits), group_size):
        group = credits[g : g + group_size]
        columns = [advantages(turn, group_size, "rloo") for turn in zip(*group)]
        out.extend(list(row) for row in zip(*columns))
    return out


def turn_credit_advantages(
    credits: Sequence[Sequence[float]], weight: float, baseline: str, group_size: int
) -> list[list[float]]:
    """The per-turn advantages the loss adds to each turn's tokens: ``weight`` × the
    credits, compared with the same turn of the episode's other samples (``rloo``:
    :func:`turn_advantages`) or with nothing (``none``)."""
    if baseline not in ("rloo", "none"):
        raise ValueError(f"unknown tag credit baseline {baseline!r}; use rloo or none")
    rows = turn_advantages(credits, group_size) if baseline == "rloo" else credits
    return [[weight * v for v in row] for row in rows]


def reward(
    score: EpisodeScore,
    weights: RewardWeights = RewardWeights(),
    cut: Sequence[bool | None] | None = None,
) -> float:
    """The weighted sum of the terms above. ``cut`` (the transcript's per-turn flags) is
    needed only by the cut-resumption term."""
    if (weights.cut_resumption or weights.cut_resumption_correct) and cut is None:
        raise ValueError("the cut_resumption rewards need the transcript's cut flags (cut=)")
    return (
        weights.accuracy * score.accuracy
        + weights.reattempts * score.reattempt_rate
        + weights.format * score.format_rate
        + weights.answer_once * answer_once_rate(score)
        + weights.resumption * resumed_rate(score)
        + (weights.cut_resumption * cut_resumed_rate(score, cut) if weights.cut_resumption else 0.0)
        + (
            weights.cut_resumption_correct * cut_resumed_rate(score, cut, correct_only=True)
            if weights.cut_resumption_correct
            else 0.0
        )
        + weights.closed_reattempts * closed_reattempt_rate(score)
    )


def advantages(
    rewards: Sequence[float], group_size: int, baseline: str, running_mean: float = 0.0
) -> list[float]:
    """Reward minus baseline. ``rewards`` holds ``group_size`` samples per episode, grouped
    contiguously. *rloo*: the mean of the other samples of the same episode; *group_mean*:
    the mean of all of them; *running_mean*: a mean carried across steps; *none*: 0."""
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; use one of {', '.join(BASELINES)}")
    if len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    out = []
    for g in range(0, len(rewards), group_size):
        group = list(rewards[g : g + group_size])
        total = sum(group)
        for r in group:
            if baseline == "rloo":
                if group_size < 2:
                    raise ValueError("the rloo baseline needs samples_per_episode >= 2")
                out.append(r - (total - r) / (group_size - 1))
            elif baseline == "group_mean":
                out.append(r - total / group_size)
            elif baseline == "running_mean":
                out.append(r - running_mean)
            else:
                out.append(r)
    return out


def normalise(values: Sequence[float], eps: float = 1e-6) -> list[float]:
    """Scale to unit standard deviation (the mean is already removed by the baseline)."""
    if len(values) < 2:
        return list(values)
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return [v / (std + eps) for v in values]
