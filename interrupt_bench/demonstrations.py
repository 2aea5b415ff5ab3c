"""Few-shot demonstrations: whole sessions played by the oracle, shown before the real one.

A pretrained instruct model has never seen the tag protocol; one or two demonstration
sessions teach it the format and, more to the point of the benchmark, show what coming
back to a cut task looks like. Every demonstration is a train-split episode of the same
config, replayed by the oracle and cut at its budgets in whitespace tokens (so the
demonstration text is the same for every model), picked in a fixed seeded order among
those that satisfy a rule (:data:`RULES`). The default shows a task left open by a cut,
answered in a later question's turn, and a closing turn that answers what is still open:
a model copies the shape it is shown, and a demonstration that ends in an empty closing
turn teaches it to write nothing there.

They come in one of two placements:

- ``turns``: earlier user/assistant chat turns before the real session (lm-eval's
  ``fewshot_as_multiturn`` convention; in plain mode, earlier transcript text);
- ``system``: transcripts inside the system prompt."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from interrupt_bench import prompts
from interrupt_bench.dataset import load_episodes
from interrupt_bench.episodes import Episode
from interrupt_bench.errors import ConfigError, DatasetError
from interrupt_bench.policies import policy_responder
from interrupt_bench.session import Transcript, replay
from interrupt_bench.tags import parse_turn

PLACEMENTS = ("turns", "system")
# Demonstration sessions before every session by default (lm-eval's num_fewshot, Inspect's
# -T num_fewshot, training's num_fewshot): two, chosen on the validation split with the
# rule (lm_eval_tasks/interrupt_bench/README.md, "Demonstrations").
DEFAULT_SHOTS = 2
FEWSHOT_SEED = 1234


def cut_and_resumed(transcript: Transcript) -> list[tuple[int, int]]:
    """The tasks a cut left open in their own turn and a later turn answered, each as
    (task id, 1-based turn of its first later answer). A cut to nothing or inside the tag
    counts: that is what a model's own cut turns look like."""
    found = []
    for v in transcript.score().verdicts:
        own = v.task_id - 1
        if v.answered_later and not v.answered_in_own_turn and transcript.cut[own] is not False:
            found.append((v.task_id, min(t for t in v.attempt_turns if t > v.task_id)))
    return found


def shows_visible_cut(transcript: Transcript) -> bool:
    """A cut answer whose turn shows the whole opening tag and some of the answer
    (``<answer task=3>dress``), finished by a later turn."""
    for task_id, _ in cut_and_resumed(transcript):
        spans = parse_turn(transcript.outputs[task_id - 1], cut=True).spans
        if any(s.task_id == task_id and s.content.strip() for s in spans):
            return True
    return False


def closing_answers(transcript: Transcript) -> bool:
    """Whether the closing turn finishes something: it exists and is not empty."""
    episode = transcript.episode
    return episode.closing_budget > 0 and bool(transcript.outputs[episode.n_tasks].strip())


def resumes_in_question_turn(transcript: Transcript) -> bool:
    """A cut task answered in a later question's turn (not only in the closing turn)."""
    n = transcript.episode.n_tasks
    return any(turn <= n for _, turn in cut_and_resumed(transcript))


def resumes_in_closing_turn(transcript: Transcript) -> bool:
    """A cut task answered in the closing turn, and none earlier."""
    resumed = cut_and_resumed(transcript)
    n = transcript.episode.n_tasks
    return bool(resumed) and all(turn > n for _, turn in resumed)


def resumes_and_closes(transcript: Transcript) -> bool:
    """A cut task answered in a later question's turn, and a closing turn that answers
    another one still open: both ways of coming back in one session."""
    return resumes_in_question_turn(transcript) and closing_answers(transcript)


def closed_tasks(transcript: Transcript) -> set[int]:
    """The tasks the closing turn answers (none when there is no closing turn)."""
    n = transcript.episode.n_tasks
    if transcript.episode.closing_budget <= 0 or len(transcript.outputs) <= n:
        return set()
    return {task_id for task_id, _ in parse_turn(transcript.outputs[n]).answers()}


def closes_earlier_tasks(transcript: Transcript) -> bool:
    """The closing turn answers two or more cut tasks, one of them not the last task: the
    closing turn is where what is open gets finished, whichever tasks those are."""
    resumed = {task_id for task_id, turn in cut_and_resumed(transcript)
               if turn > transcript.episode.n_tasks}  # fmt: skip
    return len(resumed) >= 2 and bool(resumed - {transcript.episode.n_tasks})


def closes_an_earlier_task(transcript: Transcript) -> bool:
    """The closing turn answers a cut task that is not the last task."""
    n = transcript.episode.n_tasks
    return any(turn > n and task_id != n for task_id, turn in cut_and_resumed(transcript))


@dataclass(frozen=True)
class Shot:
    """One demonstration session of a rule: the reference policy that plays it
    (:data:`interrupt_bench.policies.POLICIES`) and what it should show, as predicates in
    order of preference."""

    policy: str
    wants: tuple[Callable[[Transcript], bool], ...]


# What the demonstrations should show, by name (lm-eval metadata ``fewshot_rule``,
# Inspect's ``-T fewshot_rule=``, training's ``fewshot_rule``): the i-th demonstration is
# played as ``shots[i % len(shots)]`` says. Each train episode goes to the first predicate
# it satisfies; a shot's pick comes from its first predicate's episodes, then the next's,
# then the rest; no episode is shown twice. The default, chosen on the validation split
# (lm_eval_tasks/interrupt_bench/README.md, "Few-shot demonstrations"), is the oracle
# coming back to a cut task in the next question's turn and closing another one in the
# closing turn. Models copy the closing turn they are shown: under the default they
# answer one task there, the last (Gemma) or the first (SmolLM2), whatever is open; under
# `track_and_close`, whose second session closes tasks 2 and 3, Gemma closes 2 and 3
# (the README, "Do the models choose what to close?"; RESULTS.md, "Run 16").
_RESUME_AND_CLOSE = Shot("oracle", (resumes_and_closes, resumes_in_closing_turn))
RULES: dict[str, tuple[Shot, ...]] = {
    "track_and_close": (
        _RESUME_AND_CLOSE,
        Shot("close_open", (closes_earlier_tasks, closes_an_earlier_task)),
    ),
    "resume_and_close": (_RESUME_AND_CLOSE,),
    "close_open": (Shot("close_open", (closes_earlier_tasks, closes_an_earlier_task)),),
    "next_turn": (Shot("oracle", (resumes_in_question_turn,)),),
    "closing": (Shot("oracle", (resumes_in_closing_turn,)),),
    "visible_cut": (Shot("oracle", (shows_visible_cut,)),),
}
DEFAULT_RULE = "resume_and_close"


def check_rule(rule: str) -> str:
    """``rule`` if it names a rule, else ConfigError naming the choices."""
    if rule not in RULES:
        raise ConfigError(
            f"fewshot_rule {rule!r} is not a demonstration rule; use one of {', '.join(RULES)}"
        )
    return rule


def satisfies(transcript: Transcript, rule: str = DEFAULT_RULE, shot: int = 0) -> bool:
    """Whether a demonstration shows what ``rule`` asks of its ``shot``-th session."""
    shots = RULES[check_rule(rule)]
    return any(wanted(transcript) for wanted in shots[shot % len(shots)].wants)


def pick(
    train: Sequence[Episode], k: int, seed: int = FEWSHOT_SEED, rule: str = DEFAULT_RULE
) -> list[Transcript]:
    """``k`` transcripts of train episodes in a fixed seeded order, each played and chosen
    as ``rule``'s shot says (:data:`RULES`). In a config whose budgets never cut the
    policies' short answers (budgets 50–200), none qualifies, and the demonstrations show
    the format only.

    Raises DatasetError (before any model call) when the train split cannot supply ``k``."""
    shots = RULES[check_rule(rule)]
    if k <= 0:
        return []
    if not train:
        raise _no_train_split(k, "missing or empty")
    if k > len(train):
        raise DatasetError(
            f"--num_fewshot {k} is larger than the train split ({len(train)} episodes); "
            f"use at most {len(train)} shots or build a larger train split"
        )
    order = list(train)
    random.Random(seed).shuffle(order)
    picked: list[Transcript] = []
    used: set[str] = set()
    for i in range(k):
        transcript = _pick_one(order, shots[i % len(shots)], used)
        used.add(transcript.episode.episode_id)
        picked.append(transcript)
    return picked


def _pick_one(order: Sequence[Episode], shot: Shot, used: set[str]) -> Transcript:
    """The first episode in ``order`` (not in ``used``) that best shows what ``shot`` wants,
    played by its policy; episodes are replayed in chunks until a first choice turns up."""
    best: tuple[int, Transcript] | None = None
    for start in range(0, len(order), 64):
        chunk = [e for e in order[start : start + 64] if e.episode_id not in used]
        for transcript in replay(chunk, policy_responder(shot.policy), system=False):
            tier = next((i for i, p in enumerate(shot.wants) if p(transcript)), len(shot.wants))
            if best is None or tier < best[0]:
                best = (tier, transcript)
            if tier == 0:
                return transcript
    assert best is not None  # k <= len(train) leaves an unused episode
    return best[1]


def _no_train_split(k: int, why: str) -> DatasetError:
    return DatasetError(
        f"num_fewshot {k} (--num_fewshot, or the task's default) needs the config's train "
        f"split, which is {why}; build it (`python -m dataset_builder build --split train "
        "...`) or pass --num_fewshot 0"
    )


def _split_to_pick_from(path: str, config: str, k: int, split: str = "train") -> list[Episode]:
    """The episodes ``k`` demonstrations are picked from; a split that cannot be loaded is
    reported with the reason, before any model call."""
    try:
        return load_episodes(path, config, split)
    except DatasetError as exc:
        raise _no_train_split(k, f"missing or cannot be loaded ({exc})") from None


def from_dataset(
    path: str,
    config: str,
    k: int,
    split: str = "train",
    seed: int = FEWSHOT_SEED,
    rule: str = DEFAULT_RULE,
) -> list[Transcript]:
    """``k`` demonstrations from a dataset's ``split`` of ``config`` (see :func:`pick`)."""
    check_rule(rule)
    if k <= 0:
        return []
    return pick(_split_to_pick_from(path, config, k, split), k, seed, rule)


def demonstration_sets(
    path: str, config: str, k: int, rules: Sequence[str], sets: int, seed: int = FEWSHOT_SEED
) -> list[list[Transcript]]:
    """``sets`` picks of ``k`` demonstrations for each rule in ``rules`` (seeds ``seed``,
    ``seed + 1``, ...), rule by rule: training shows a different one at each step, so that
    no single closing turn is the one the reward pays for copying. The first set of a rule
    is the one evaluation shows under that rule."""
    for rule in rules:
        check_rule(rule)
    if k <= 0:
        return [[]]
    train = _split_to_pick_from(path, config, k)
    return [pick(train, k, seed + j, rule) for rule in rules for j in range(sets)]


def as_sessions(transcripts: Sequence[Transcript]) -> list[list[dict[str, str]]]:
    """Each demonstration as chat messages (user/assistant pairs, no system prompt)."""
    return [t.messages(system=False) for t in transcripts]


def with_demonstrations(
    messages: list[dict[str, str]], sessions: Sequence[list[dict[str, str]]], placement: str
) -> list[dict[str, str]]:
    """A real session's messages (system prompt first) with the demonstration sessions
    placed in them: as earlier turns, or as transcripts inside the system prompt."""
    if not sessions:
        return messages
    if placement not in PLACEMENTS:
        raise ValueError(f"fewshot placement must be one of {PLACEMENTS}, got {placement!r}")
    system, rest = messages[0], messages[1:]
    if system["role"] != "system":
        raise ValueError("demonstrations need a session that starts with its system prompt")
    if placement == "system":
        content = prompts.render("demonstrations.j2", system=system["content"], sessions=sessions)
        return [{"role": "system", "content": content}, *rest]
    return [system, *(m for session in sessions for m in session), *rest]
