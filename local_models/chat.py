"""A session as text and token ids for one model: its chat template, or plain
``User:``/``Assistant:`` text for models without one.

This module is the one prompt renderer of the project. The lm-eval hook renders each
turn's prompt with :func:`render`; training rollouts build their token sequences from
:func:`turn_delta_ids`, which calls the same :func:`render` and encodes the first prompt
as lm-eval's ``hf`` model does (:func:`encode_prompt`); the reference models' training
data comes from :func:`turn_deltas`. So a policy is trained on the prompts it is
evaluated with: the same text, and the same ids on every turn wherever the tokenizer
re-encodes the model's own text to the ids it sampled (evaluation re-encodes each
prompt whole, training keeps the sampled ids; Gemma 3 in plain mode merges
``Assistant:`` and ``<answer`` into ``:<``). ``tests/test_prompt_rendering.py`` checks
this on both of the hook's paths."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from interrupt_bench import demonstrations, prompts, turn_contract
from interrupt_bench.episodes import Episode
from interrupt_bench.session import conversation

PLACEHOLDER = "\ue000"  # stands for an assistant message while rendering the template


Messages = list[dict[str, str]]


def render(
    apply_template: Callable[[Messages], str] | None,
    messages: Messages,
    shots: Sequence[Messages] = (),
    placement: str = "turns",
    system_instruction: str | None = None,
) -> str:
    """The prompt of one turn, for evaluation and training alike: the session's messages
    (system prompt first, ``system_instruction`` before it: lm-eval's
    ``--system_instruction``) with the demonstration sessions ``shots`` placed in them.

    ``apply_template`` renders chat messages with the model's chat template (with the
    generation prompt); None is plain mode, where the demonstrations keep their own
    headings (``prompts.plain_transcript``). A template that drops the system role (some
    do, silently or, through :func:`tokenizer_template` and lm-eval's ``hf`` model, after
    refusing it) gets the system prompt folded into the first user turn, so the model
    still reads the rules."""
    if system_instruction and messages and messages[0]["role"] == "system":
        messages = [dict(m) for m in messages]
        messages[0]["content"] = f"{system_instruction}\n\n{messages[0]['content']}"
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


def tokenizer_template(tokenizer: Any) -> Callable[[Messages], str]:
    """A tokenizer's chat template as :func:`render` takes it, applied as lm-eval's ``hf``
    model applies it (``HFLM.apply_chat_template``): a template that refuses the system
    role (``raise_exception`` in the template) renders the messages without it, and
    :func:`render` then folds the system prompt into the first user turn. Training thus
    gets the prompt evaluation sends instead of the template's error."""
    from jinja2.exceptions import TemplateError

    def apply(messages: Messages) -> str:
        try:
            return tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except TemplateError:
            kept = [m for m in messages if m["role"] != "system"]
            return tokenizer.apply_chat_template(kept, tokenize=False, add_generation_prompt=True)

    return apply


def prompt_text(
    tokenizer: Any,
    messages: Messages,
    chat: bool,
    shots: Sequence[Messages] = (),
    placement: str = "turns",
    system_instruction: str | None = None,
) -> str:
    """:func:`render` with a tokenizer's chat template (``chat``) or in plain mode."""
    template = tokenizer_template(tokenizer) if chat else None
    return render(template, messages, shots, placement, system_instruction)


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """The ids of a whole prompt as lm-eval's ``hf`` model encodes it (``HFLM.tok_encode``
    with its default ``add_bos_token``): the tokenizer's special tokens (a BOS for Gemma
    and Llama tokenizers) unless the text already starts with the BOS a chat template
    wrote. Training encodes its first delta with it, so a plain-mode prompt on a model
    whose tokenizer adds a BOS starts with that BOS in training as in evaluation."""
    prefix = tokenizer.bos_token_id
    if prefix is None:
        prefix = tokenizer.eos_token_id  # lm-eval's ``prefix_token_id`` falls back to it
    if prefix is not None and text.startswith(tokenizer.decode(prefix)):
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(text)


def turn_deltas(
    tokenizer: Any,
    episode: Episode,
    chat: bool,
    system: bool = True,
    shots: Sequence[Messages] = (),
    placement: str = "turns",
    system_instruction: str | None = None,
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
        text = prompt_text(tokenizer, messages, chat, shots, placement, system_instruction)
        if t and text.count(PLACEHOLDER) != t:
            raise ValueError(
                "the chat template does not render assistant messages verbatim; training "
                "needs one that does (or use plain mode)"
            )
        deltas.append(text.rsplit(PLACEHOLDER, 1)[-1] if t else text)
    return deltas


def turn_delta_ids(
    tokenizer: Any,
    episode: Episode,
    chat: bool,
    shots: Sequence[Messages] = (),
    placement: str = "turns",
    system_instruction: str | None = None,
) -> list[list[int]]:
    """:func:`turn_deltas` as token ids, what a training rollout appends before each turn:
    the first prompt encoded as evaluation encodes a prompt (:func:`encode_prompt`), each
    later delta without special tokens (it continues the sequence)."""
    deltas = turn_deltas(
        tokenizer, episode, chat, shots=shots, placement=placement,
        system_instruction=system_instruction,
    )  # fmt: skip
    return [
        encode_prompt(tokenizer, d) if t == 0 else tokenizer.encode(d, add_special_tokens=False)
        for t, d in enumerate(deltas)
    ]


def model_config_eos(model: Any) -> int | list[int] | None:
    """The generation config's ``eos_token_id`` of a transformers model (a peft model
    passes it through), or None."""
    return getattr(getattr(model, "generation_config", None), "eos_token_id", None)


def hf_turn_contract(tokenizer: Any, model: Any, chat: bool) -> turn_contract.TurnContract:
    """The turn contract (:mod:`interrupt_bench.turn_contract`) of a transformers model,
    as the lm-eval hook keeps it on the session engine with the task's default stops."""
    return turn_contract.turn_contract(chat, tokenizer.eos_token_id, model_config_eos(model))
