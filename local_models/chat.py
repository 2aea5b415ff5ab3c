"""A session as text for one model: its chat template, or plain ``User:``/``Assistant:``
text for models without one. Training and the reference models both build their token
sequences from these deltas, so what the model is trained on is what it is asked."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from interrupt_bench import demonstrations, prompts
from interrupt_bench.episodes import Episode
from interrupt_bench.session import conversation

PLACEHOLDER = "\ue000"  # stands for an assistant message while rendering the template


Messages = list[dict[str, str]]


def render(
    apply_template: Callable[[Messages], str] | None,
    messages: Messages,
    shots: Sequence[Messages] = (),
    placement: str = "turns",
) -> str:
    """The prompt of one turn, for evaluation and training alike: the session's messages
    (system prompt first) with the demonstration sessions ``shots`` placed in them.

    ``apply_template`` renders chat messages with the model's chat template (with the
    generation prompt); None is plain mode, where the demonstrations keep their own
    headings (``prompts.plain_transcript``). A template that drops the system role (some
    do) gets the system prompt folded into the first user turn."""
    if apply_template is None and placement == "turns":
        return prompts.plain_transcript(messages, shots)
    messages = demonstrations.with_demonstrations(messages, shots, placement)
    if apply_template is None:
        return prompts.plain_transcript(messages)
    rendered = apply_template(messages)
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    if system and system[:60] not in str(rendered):
        merged = [dict(m) for m in messages[1:]]
        merged[0]["content"] = f"{system}\n\n{merged[0]['content']}"
        rendered = apply_template(merged)
    return rendered


def tokenizer_template(tokenizer) -> Callable[[Messages], str]:
    """A tokenizer's chat template as :func:`render` takes it."""
    return lambda messages: tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )


def prompt_text(
    tokenizer, messages: Messages, chat: bool, shots: Sequence[Messages] = ()
) -> str:
    """:func:`render` with a tokenizer's chat template (``chat``) or in plain mode."""
    return render(tokenizer_template(tokenizer) if chat else None, messages, shots)


def turn_deltas(
    tokenizer,
    episode: Episode,
    chat: bool,
    system: bool = True,
    shots: Sequence[list[dict[str, str]]] = (),
) -> list[str]:
    """Text to append before each turn's generation: delta[0] is the whole first prompt,
    delta[t] what the template puts after assistant message t-1 up to the generation
    prompt of turn t. Concatenating deltas and outputs gives the rendered conversation.

    ``shots`` are demonstration sessions (``demonstrations.as_sessions``), placed as
    earlier chat turns after the system prompt (where lm-eval puts them with
    ``--apply_chat_template``), or before the real session in plain mode: the same
    :func:`render` the lm-eval hook uses, so training sees the prompts the task
    evaluates with."""
    deltas = []
    for t in range(episode.n_turns):
        messages = conversation(episode, [PLACEHOLDER] * t, system=system)
        text = prompt_text(tokenizer, messages, chat, shots)
        if t and text.count(PLACEHOLDER) != t:
            raise ValueError(
                "the chat template does not render assistant messages verbatim; training "
                "needs one that does (or use plain mode)"
            )
        deltas.append(text.rsplit(PLACEHOLDER, 1)[-1] if t else text)
    return deltas
