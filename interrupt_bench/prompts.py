"""The prompt texts, each rendered from one jinja2 template in ``interrupt_bench/templates/``.

Templates run in jinja2's immutable sandbox with strict undefined variables: nothing a
model writes (or a dataset row holds) is ever evaluated as code."""

from __future__ import annotations

import functools
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

PROMPT_DIR = Path(__file__).parent / "templates"


@functools.cache
def environment(directory: str | Path = PROMPT_DIR) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(directory)),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


def render(name: str, directory: str | Path = PROMPT_DIR, **values: object) -> str:
    return environment(directory).get_template(name).render(**values).strip()


def system_prompt(n_tasks: int, directory: str | Path = PROMPT_DIR) -> str:
    return render("system.j2", directory, n_tasks=n_tasks)


def question_message(task_id: int, question: str, directory: str | Path = PROMPT_DIR) -> str:
    return render("question.j2", directory, task_id=task_id, question=question)


def closing_message(n_tasks: int, directory: str | Path = PROMPT_DIR) -> str:
    return render("closing.j2", directory, n_tasks=n_tasks)


def plain_transcript(messages: list[dict[str, str]], directory: str | Path = PROMPT_DIR) -> str:
    """A chat (system?, user, assistant, …, user) as one text prompt for models used
    without a chat template. Earlier outputs follow ``Assistant:`` exactly as generated."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    rest = messages[1:] if system else messages
    turns = [
        {"user": rest[i]["content"], "assistant": rest[i + 1]["content"]}
        for i in range(0, len(rest) - 1, 2)
    ]
    template = environment(directory).get_template("plain.j2")
    return template.render(system=system, turns=turns, next_user=rest[-1]["content"])
