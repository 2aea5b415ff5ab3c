"""The prompt texts, each rendered from one jinja2 template in ``interrupt_bench/templates/``
(through the sandboxed environment of :mod:`interrupt_bench.templating`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from interrupt_bench.templating import environment, package_dir

PROMPT_DIR = package_dir("interrupt_bench", "templates")


def render(name: str, directory: str | Path = PROMPT_DIR, **values: object) -> str:
    return environment(directory).get_template(name).render(**values).strip()


def system_prompt(n_tasks: int, directory: str | Path = PROMPT_DIR) -> str:
    return render("system.j2", directory, n_tasks=n_tasks)


def question_message(task_id: int, question: str, directory: str | Path = PROMPT_DIR) -> str:
    return render("question.j2", directory, task_id=task_id, question=question)


def closing_message(n_tasks: int, directory: str | Path = PROMPT_DIR) -> str:
    return render("closing.j2", directory, n_tasks=n_tasks)


def _pairs(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """user/assistant messages as ``{"user", "assistant"}`` turns."""
    return [
        {"user": messages[i]["content"], "assistant": messages[i + 1]["content"]}
        for i in range(0, len(messages) - 1, 2)
    ]


def plain_transcript(
    messages: list[dict[str, str]],
    demonstrations: Sequence[Sequence[dict[str, str]]] = (),
    directory: str | Path = PROMPT_DIR,
) -> str:
    """A chat (system?, user, assistant, …, user) as one text prompt for models used
    without a chat template (a pretrained base model continues it). Earlier outputs of
    the real session follow ``Assistant:`` exactly as generated.

    ``demonstrations`` (user/assistant sessions) come between the system prompt and the
    real session, each under its own heading, and the real session under one of its own,
    so a base model sees where one session ends and the next begins. A demonstration's
    reply is written after ``Assistant:`` with the space a model writes there, and an
    empty reply (a budget-0 turn, a closing turn with nothing left) is left out: shown as
    an empty ``Assistant:`` line followed by the next ``User:`` line, it teaches a base
    model to write nothing."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    rest = messages[1:] if system else messages
    template = environment(directory).get_template("plain.j2")
    return template.render(
        system=system,
        demonstrations=[_pairs(session) for session in demonstrations],
        turns=_pairs(rest),
        next_user=rest[-1]["content"],
    )
