"""The prompt texts, each rendered from one jinja2 template in ``interrupt_bench/templates/``
(through the sandboxed environment of :mod:`interrupt_bench.templating`)."""

from __future__ import annotations

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
