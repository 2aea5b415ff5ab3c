"""The metrics of docs/protocol.md for one episode, and how they aggregate.

turn(k) is the assistant turn right after question k (index k-1); the closing turn, if
any, comes last. Tags naming a task not asked yet at that turn (or no task at all) are
ignored for scoring. Each metric is defined once, here."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from interrupt_bench.checkers import flexible_answer
from interrupt_bench.config import DEFAULT_FAMILIES
from interrupt_bench.episodes import Episode
from interrupt_bench.tags import ParsedTurn, parse_turn

# The version of the lm-eval and Inspect tasks: bump when a change alters any score for
# the same outputs.
TASK_VERSION = "4.1"
# How a played session is read: strictly (the protocol), or flexibly (``score_episode``'s
# ``flexible``), lm-eval's two filters and Inspect's ``-T filter=``.
FILTERS = ("strict", "flexible")

# Metrics that are a mean over episodes of a per-episode value.
MEAN_METRICS = (
    "accuracy",
    "reattempts",
    "reattempt_rate",
    "overwrite_rate",
    "answer_rate",
    "format_rate",
)
# Metrics that are a ratio of sums over all tasks (episodes with nothing to count do not count).
RATIO_METRICS = ("resumption_rate", "reattempt_precision")


def lm_eval_metrics(families: Sequence[str] = DEFAULT_FAMILIES) -> dict[str, str]:
    """Every metric the lm-eval tasks of a config with these ``families`` report -> its
    aggregation: ``mean`` over episodes, or ``ratio`` (sum of numerators / sum of
    denominators). The task YAML's ``metric_list`` is generated from this, and
    ``EpisodeScore.items`` gives these keys."""
    return {
        **dict.fromkeys(MEAN_METRICS, "mean"),
        **dict.fromkeys(RATIO_METRICS, "ratio"),
        **{f"accuracy_{family}": "ratio" for family in families},
    }


@dataclass(frozen=True)
class TaskVerdict:
    """Why a task scored as it did, for transcripts a person reads."""

    task_id: int
    family: str
    kind: str
    expected: str
    final_answer: str | None
    correct: bool
    answered_in_own_turn: bool
    answered_later: bool
    attempt_turns: tuple[int, ...]  # 1-based assistant turns with an attempt at this task
    answer_count: int = 0  # closed answers at or after its own turn
    untagged_answer: str | None = None  # what the flexible filter read from an untagged turn
    overwritten: bool = False  # a correct closed answer replaced by a later wrong one

    @property
    def answered(self) -> bool:
        return self.answered_in_own_turn or self.answered_later

    def reattempted(self) -> bool:
        return any(t > self.task_id for t in self.attempt_turns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "family": self.family,
            "kind": self.kind,
            "expected": self.expected,
            "final_answer": self.final_answer,
            "correct": self.correct,
            "answered_in_own_turn": self.answered_in_own_turn,
            "answered_later": self.answered_later,
            "attempt_turns": list(self.attempt_turns),
            "answer_count": self.answer_count,
            "untagged_answer": self.untagged_answer,
            "overwritten": self.overwritten,
        }


@dataclass(frozen=True)
class EpisodeScore:
    n_tasks: int
    correct: int
    reattempts: int
    answered: int
    resumption_num: int  # tasks unanswered in their own turn that get an answer later
    resumption_den: int  # tasks unanswered in their own turn
    well_formed_turns: int
    n_turns: int
    verdicts: tuple[TaskVerdict, ...]
    turn_problems: tuple[tuple[str, ...], ...]
    family_counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # correct, total
    reattempts_open: int = 0  # re-attempted tasks that were still open (reattempt_precision)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n_tasks

    @property
    def reattempt_rate(self) -> float:
        return self.reattempts / self.n_tasks

    @property
    def overwrite_rate(self) -> float:
        """Tasks whose correct closed answer a later turn replaced with a wrong one: what
        going back costs when it re-answers what was already right."""
        return sum(v.overwritten for v in self.verdicts) / self.n_tasks

    @property
    def answer_rate(self) -> float:
        return self.answered / self.n_tasks

    @property
    def format_rate(self) -> float:
        return self.well_formed_turns / self.n_turns if self.n_turns else 1.0

    @property
    def resumption_rate(self) -> float:
        """This episode's ratio; NaN when no task needed resuming (aggregate with sums)."""
        return self.resumption_num / self.resumption_den if self.resumption_den else math.nan

    @property
    def reattempt_precision(self) -> float:
        """Of the tasks re-attempted after their own turn, the share that had no closed
        answer there: how well going back aims at what is open. A model that re-answers
        the same tasks in every closing turn (what small models copy from their
        demonstrations) scores how often those tasks happen to be open; only keeping
        track of which tasks are open raises it. NaN when nothing was re-attempted."""
        return self.reattempts_open / self.reattempts if self.reattempts else math.nan

    def metrics(self) -> dict[str, float]:
        out = {name: float(getattr(self, name)) for name in (*MEAN_METRICS, *RATIO_METRICS)}
        for family, (correct, total) in sorted(self.family_counts.items()):
            out[f"accuracy_{family}"] = correct / total
        return out

    def items(
        self, families: Sequence[str] = DEFAULT_FAMILIES
    ) -> dict[str, float | tuple[int, int]]:
        """What one episode contributes to the benchmark's metrics (lm-eval's per-document
        results): plain values are averaged over episodes; ``(numerator, denominator)``
        pairs are summed first, so a ratio weighs every task, not every episode.
        ``families`` are those of the episode's config (one ``accuracy_FAMILY`` each)."""
        out: dict[str, float | tuple[int, int]] = {
            name: float(getattr(self, name)) for name in MEAN_METRICS
        }
        out["resumption_rate"] = (self.resumption_num, self.resumption_den)
        out["reattempt_precision"] = (self.reattempts_open, self.reattempts)
        for family in families:
            out[f"accuracy_{family}"] = self.family_counts.get(family, (0, 0))
        return out


def score_episode(
    episode: Episode,
    outputs: Sequence[str],
    cut: Sequence[bool | None] | None = None,
    flexible: bool = False,
) -> EpisodeScore:
    """Score the assistant turns of one episode (one string per turn, closing turn last).

    ``cut[i]`` says whether turn i was stopped by its budget (None, unknown: assume it was).

    ``flexible`` (the lm-eval pack's ``flexible`` filter) also credits a task that never
    got a closed answer when its own turn holds no tag at all and the family's extractor
    finds the right answer in that turn's text, outside any part that only repeats the
    question (:func:`interrupt_bench.checkers.flexible_answer`).
    It changes accuracy only: answers, re-attempts and format stay the protocol's, so the
    gap between the two filters is what the format costs a model."""
    n, n_turns = episode.n_tasks, episode.n_turns
    if isinstance(outputs, str) or not all(isinstance(o, str) for o in outputs):
        raise TypeError(
            f"outputs must be a sequence of strings, one per assistant turn; got "
            f"{type(outputs).__name__}"
            + (" (wrap a single turn in a list)" if isinstance(outputs, str) else "")
        )
    if cut is not None and (isinstance(cut, str) or len(cut) != len(outputs)):
        raise ValueError(
            f"cut must hold one bool (or None) per output: {len(outputs)} outputs, got {cut!r:.80}"
        )
    if len(outputs) != n_turns:
        raise ValueError(
            f"episode {episode.episode_id} has {n_turns} assistant turns "
            f"({n} questions{' + closing' if episode.closing_budget else ''}), "
            f"got {len(outputs)} outputs"
        )
    cut = [c is not False for c in cut] if cut is not None else [True] * n_turns
    parsed: list[ParsedTurn] = [parse_turn(text, c) for text, c in zip(outputs, cut)]

    verdicts = []
    family_counts: dict[str, tuple[int, int]] = {}
    for k, task in enumerate(episode.tasks, start=1):
        own = k - 1  # index of turn(k)
        attempt_turns, final, in_own, later, count = [], None, False, False, 0
        was_right = False
        for i in range(own, n_turns):
            if k in parsed[i].attempted():
                attempt_turns.append(i + 1)
            for task_id, content in parsed[i].answers():
                if task_id == k:
                    if final is not None:
                        was_right |= task.check(final)
                    final, count = content, count + 1
                    in_own |= i == own
                    later |= i > own
        correct = final is not None and task.check(final)
        overwritten = was_right and not correct
        untagged = None
        if flexible and final is None and not parsed[own].spans and outputs[own].strip():
            untagged = flexible_answer(task, outputs[own])
            correct = untagged is not None and task.check(untagged)
        verdicts.append(
            TaskVerdict(
                k,
                task.family,
                task.kind,
                task.answer,
                final,
                correct,
                in_own,
                later,
                tuple(attempt_turns),
                count,
                untagged,
                overwritten,
            )
        )
        c, t = family_counts.get(task.family, (0, 0))
        family_counts[task.family] = (c + int(correct), t + 1)

    unanswered_own = [v for v in verdicts if not v.answered_in_own_turn]
    return EpisodeScore(
        n_tasks=n,
        correct=sum(v.correct for v in verdicts),
        reattempts=sum(v.reattempted() for v in verdicts),
        answered=sum(v.answered for v in verdicts),
        resumption_num=sum(v.answered_later for v in unanswered_own),
        resumption_den=len(unanswered_own),
        well_formed_turns=sum(p.well_formed for p in parsed),
        n_turns=n_turns,
        verdicts=tuple(verdicts),
        turn_problems=tuple(p.problems for p in parsed),
        family_counts=family_counts,
        reattempts_open=sum(v.reattempted() for v in unanswered_own),
    )


REATTEMPT_KINDS = ("open", "finished", "not_asked")


def reattempt_kinds(
    episode: Episode, outputs: Sequence[str], cut: Sequence[bool | None] | None = None
) -> dict[str, int]:
    """Where an episode's tags naming an earlier task point, one count per tag: ``open``
    (the task had no closed answer yet: coming back to it is what the benchmark asks for),
    ``finished`` (it had one: a repeat, which can overwrite a right answer) or
    ``not_asked`` (a task id not asked yet or not in the episode; ignored by the metrics).

    The re-attempt metric counts the first two alike; this split says which one a policy
    (or a reward) actually moves."""
    cut = [c is not False for c in cut] if cut is not None else [True] * len(outputs)
    counts = dict.fromkeys(REATTEMPT_KINDS, 0)
    answered: set[int] = set()
    for i, (text, c) in enumerate(zip(outputs, cut)):
        current = i + 1 if i < episode.n_tasks else None  # the closing turn asks no task
        spans = parse_turn(text, c).spans
        for span in spans:
            k = span.task_id
            if k is None or k == current:
                continue
            if not 1 <= k <= min(i + 1, episode.n_tasks):
                counts["not_asked"] += 1
            else:
                counts["finished" if k in answered else "open"] += 1
        asked = min(i + 1, episode.n_tasks)  # an answer before its question does not count
        answered |= {s.task_id for s in spans if s.is_answer and 1 <= (s.task_id or 0) <= asked}
    return counts


def merge_scores(scores: Sequence[EpisodeScore]) -> EpisodeScore:
    """One score for several sessions that together ask one episode's tasks (the
    single-task control): counts add up, so ratios are over all their tasks and turns."""
    if not scores:
        raise ValueError("merge_scores needs at least one score")
    families: dict[str, tuple[int, int]] = {}
    for s in scores:
        for family, (c, t) in s.family_counts.items():
            fc, ft = families.get(family, (0, 0))
            families[family] = (fc + c, ft + t)
    return EpisodeScore(
        n_tasks=sum(s.n_tasks for s in scores),
        correct=sum(s.correct for s in scores),
        reattempts=sum(s.reattempts for s in scores),
        answered=sum(s.answered for s in scores),
        resumption_num=sum(s.resumption_num for s in scores),
        resumption_den=sum(s.resumption_den for s in scores),
        well_formed_turns=sum(s.well_formed_turns for s in scores),
        n_turns=sum(s.n_turns for s in scores),
        verdicts=tuple(v for s in scores for v in s.verdicts),
        turn_problems=tuple(p for s in scores for p in s.turn_problems),
        family_counts=families,
        reattempts_open=sum(s.reattempts_open for s in scores),
    )


def mean_stderr(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / sqrt(n)); stderr NaN for n < 2."""
    xs = [float(v) for v in values]
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, math.nan
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var / len(xs))


def ratio_of_sums(pairs: Iterable[tuple[float, float]]) -> float:
    """Sum of numerators over sum of denominators; NaN when nothing was counted."""
    num = den = 0.0
    for a, b in pairs:
        num, den = num + a, den + b
    return num / den if den else math.nan


def aggregate(scores: Sequence[EpisodeScore]) -> dict[str, float]:
    """Report-level numbers: means (with `_stderr`) and the ratio-of-sums metrics."""
    out: dict[str, float] = {"episodes": float(len(scores))}
    for name in MEAN_METRICS:
        out[name], out[f"{name}_stderr"] = mean_stderr(getattr(s, name) for s in scores)
    out["resumption_rate"] = ratio_of_sums((s.resumption_num, s.resumption_den) for s in scores)
    out["reattempt_precision"] = ratio_of_sums((s.reattempts_open, s.reattempts) for s in scores)
    families = sorted({f for s in scores for f in s.family_counts})
    for family in families:
        out[f"accuracy_{family}"] = ratio_of_sums(
            s.family_counts[family] for s in scores if family in s.family_counts
        )
    return out
