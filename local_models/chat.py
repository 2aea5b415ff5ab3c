"""A session as text for one model: its chat template, or plain ``User:``/``Assistant:``
text for models without one. Training and the reference models both build their token
sequences from these deltas, so what the model is trained on is what it is asked."""

from __future__ import annotations

from collections.abc import Sequence

from interrupt_bench import demonstrations, prompts
from interrupt_bench.episodes import Episode
from interrupt_bench.session import conversation

PLACEHOLDER = "\ue000"  # stands for an assistant message while rendering the template


def prompt_text(tokenizer, messages: list[dict[str, str]], chat: bool) -> str:
    if chat:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompts.plain_transcript(messages)


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
    earlier chat turns after the system prompt: where lm-eval puts them with
    ``--apply_chat_template`` (and in plain mode), so training sees the prompts the
    task evaluates with."""
    deltas = []
    for t in range(episode.n_turns):
        messages = conversation(episode, [PLACEHOLDER] * t, system=system)
        messages = demonstrations.with_demonstrations(messages, shots, "turns")
        text = prompt_text(tokenizer, messages, chat)
        if t and text.count(PLACEHOLDER) != t:
            raise ValueError(
                "the chat template does not render assistant messages verbatim; training "
                "needs one that does (or use plain mode)"
            )
        deltas.append(text.rsplit(PLACEHOLDER, 1)[-1] if t else text)
    return deltas
