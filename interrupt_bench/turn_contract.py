"""What ends an assistant turn: the one contract every path keeps.

A turn ends at its budget, at an end-of-sequence id, or at a stop string, and the same
rule holds for evaluation (the session engine and vLLM behind lm-eval, Inspect) and for
training rollouts (the engine and vLLM again), so REINFORCE learns on the turns
evaluation produces. The stop strings are protocol facts (the next question's opening
tag; in plain mode, the next ``User:`` line); the EOS ids are the model's (its
tokenizer's and its generation config's, which may list several: Gemma 3 lists two).
Each backend reads the raw values from its own objects and asks here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

STOP_SEQUENCES = ("<question",)  # a model writing the next question has ended its turn
PLAIN_STOP = "\nUser:"  # plain mode: a model writing the next user line has ended its turn


def stop_strings(chat: bool, until: Iterable[str] = ()) -> list[str]:
    """What ends a turn besides EOS and the budget: ``until`` (lm-eval's generation
    kwargs; default :data:`STOP_SEQUENCES`), plus the next ``User:`` line in plain mode."""
    stops = list(until) or list(STOP_SEQUENCES)
    if not chat and PLAIN_STOP not in stops:
        stops.append(PLAIN_STOP)
    return stops


def eos_ids(tokenizer_eos: int | None, config_eos: int | Iterable[int] | None) -> list[int]:
    """Every id that ends a turn, as ``model.generate`` stops on them: the tokenizer's
    EOS and the generation config's ``eos_token_id`` (one id or a list), sorted."""
    ids = set() if tokenizer_eos is None else {int(tokenizer_eos)}
    if config_eos is not None:
        ids |= {int(i) for i in ([config_eos] if isinstance(config_eos, int) else config_eos)}
    return sorted(ids)


@dataclass(frozen=True)
class TurnContract:
    """What ends every turn of a run, besides its budget."""

    stop: tuple[str, ...]
    eos_ids: tuple[int, ...]


def turn_contract(
    chat: bool,
    tokenizer_eos: int | None,
    config_eos: int | Iterable[int] | None,
    until: Iterable[str] = (),
) -> TurnContract:
    """The contract of a run: its stop strings and its model's EOS ids."""
    return TurnContract(tuple(stop_strings(chat, until)), tuple(eos_ids(tokenizer_eos, config_eos)))
