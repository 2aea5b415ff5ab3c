"""One turn on an lm-eval model, whatever plays it: its prompt as the model sees it, a
turn known only as text (counted in the model's tokens), the cut of a text to a budget,
and the error a failed model ends the run with."""

from __future__ import annotations

from functools import partial
from typing import Any

from interrupt_bench.session import TurnRequest, TurnResult, counted_result
from lm_eval_tasks.settings import RunSettings
from local_models.chat import render


class SessionReplayError(RuntimeError):
    """The evaluated model failed during a session: stop rather than score silent zeros."""


def turn_prompt(lm: Any, request: TurnRequest, settings: RunSettings) -> str:
    """The prompt of one turn as the model sees it, rendered by :func:`local_models.chat.
    render`, the renderer training uses too: ``--system_instruction`` before the system
    prompt, the demonstrations, then the session so far, through the model's chat
    template (``lm.apply_chat_template``) or in plain mode."""
    chat = settings.chat
    template = partial(lm.apply_chat_template, add_generation_prompt=True) if chat else None
    return render(
        template,
        request.messages,
        settings.fewshot,
        settings.fewshot_placement,
        settings.system_instruction,
    )


def text_result(lm: Any, text: str, budget: int) -> TurnResult:
    """A turn known only as text (from ``--use_cache``, or back from ``generate_until``),
    counted in the evaluated model's tokenizer (:func:`interrupt_bench.session.
    counted_result`)."""
    return counted_result(getattr(lm, "tokenizer", None), text, budget)


def truncate_tokens(lm: Any, text: str, budget: int) -> str:
    """``text`` cut to at most ``budget`` tokens of the evaluated model's tokenizer."""
    tokenizer = lm.tokenizer
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= budget:
        return text
    for keep in range(budget, -1, -1):  # re-encoding a decoded prefix can merge tokens
        cut = tokenizer.decode(ids[:keep], skip_special_tokens=True)
        if len(tokenizer.encode(cut, add_special_tokens=False)) <= budget:
            return cut
    return ""
