"""Reference policies that pin the metrics end to end (docs/protocol.md).

*oracle* answers, in order, every earlier task it has not answered yet and then the
current one; *no-resume* answers only the current task. *close-open* answers the current
task in its own turn and, in the closing turn, every task still without a closed answer:
it comes back only at the end, to exactly what is open (the demonstrations' second
session shows it). *close-last* answers the current task and, in the closing turn, the
last task whatever is open: the habit a model picks up from demonstrations that always
close the last task; its resumption is the score such a habit gets by chance, the level a
model's resumption is read against. All four write answer tags only. *echo* answers
nothing: it says back what it was told (the question's text in a question turn, the
closing message in the closing turn), so it must score 0 under every filter. All are cut
at the budget like any model. Here the cut counts whitespace-separated
tokens; the lm-eval pack cuts with the evaluated model's tokenizer instead."""

from __future__ import annotations

import re
from collections.abc import Callable

from interrupt_bench import prompts
from interrupt_bench.episodes import Episode
from interrupt_bench.session import TurnRequest, TurnResult
from interrupt_bench.tags import parse_turn

_WORD = re.compile(r"\S+")


def cut_to_words(text: str, budget: int) -> TurnResult:
    """Keep the first ``budget`` whitespace-separated tokens of ``text``, spacing intact."""
    words = list(_WORD.finditer(text))
    if len(words) <= budget:
        return TurnResult(text, cut=False, n_tokens=len(words))
    kept = text[: words[budget - 1].end()] if budget > 0 else ""
    return TurnResult(kept, cut=True, n_tokens=budget)


def answer_tag(task_id: int, answer: str) -> str:
    return f"<answer task={task_id}>{answer}</answer>"


def oracle_text(episode: Episode, turn: int, previous_outputs: tuple[str, ...]) -> str:
    answered = {tid for text in previous_outputs for tid, _ in parse_turn(text).answers()}
    current = min(turn + 1, episode.n_tasks)  # the closing turn has no new task
    return "\n".join(
        answer_tag(k, episode.tasks[k - 1].answer)
        for k in range(1, current + 1)
        if k not in answered
    )


def no_resume_text(episode: Episode, turn: int, previous_outputs: tuple[str, ...]) -> str:
    if turn >= episode.n_tasks:
        return ""
    return answer_tag(turn + 1, episode.tasks[turn].answer)


def close_open_text(episode: Episode, turn: int, previous_outputs: tuple[str, ...]) -> str:
    if turn < episode.n_tasks:
        return no_resume_text(episode, turn, previous_outputs)
    return oracle_text(episode, turn, previous_outputs)


def close_last_text(episode: Episode, turn: int, previous_outputs: tuple[str, ...]) -> str:
    if turn < episode.n_tasks:
        return no_resume_text(episode, turn, previous_outputs)
    return answer_tag(episode.n_tasks, episode.tasks[-1].answer)


def echo_text(episode: Episode, turn: int, previous_outputs: tuple[str, ...]) -> str:
    """The current question's text as the user message shows it, without its
    ``<question task=k>`` tag (``<question`` ends a turn in every front end, so a model
    writing it would stop there); in the closing turn, the closing message."""
    if turn >= episode.n_tasks:
        return prompts.closing_message(episode.n_tasks)
    return episode.tasks[turn].question


Policy = Callable[[Episode, int, tuple[str, ...]], str]
POLICIES: dict[str, Policy] = {
    "oracle": oracle_text,
    "no_resume": no_resume_text,
    "close_open": close_open_text,
    "close_last": close_last_text,
    "echo": echo_text,
}


def policy_responder(policy: str | Policy) -> Callable[[list[TurnRequest]], list[TurnResult]]:
    """A replay responder that writes the policy's text and cuts it at the budget."""
    fn = POLICIES[policy] if isinstance(policy, str) else policy

    def respond(requests: list[TurnRequest]) -> list[TurnResult]:
        return [cut_to_words(fn(r.episode, r.turn, r.previous_outputs), r.budget) for r in requests]

    return respond
