"""How every session of one lm-eval request is played: :class:`RunSettings`, typed,
frozen and checked when made, with every default in one place.

The task builds them from its metadata, ``--apply_chat_template``, ``--system_instruction``
and ``generation_kwargs`` (``utils.InterruptBenchTask.construct_requests``); the Instance
carries them as the plain dict of :meth:`RunSettings.to_args` (lm-eval logs and pickles
an Instance's arguments), and the request side reads them back with
:meth:`RunSettings.from_args` and passes the object down as is. A bad value is a
``ConfigError`` of one line naming the value and what to write instead."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from interrupt_bench import demonstrations, turn_contract
from interrupt_bench.controls import CONDITIONS, CONTROL_BUDGET, PAIRED, check_budget_cap
from interrupt_bench.errors import ConfigError
from local_models.engine import check_sampling_values, stop_list

Messages = list[dict[str, str]]

TURN_BATCHING = ("auto", "exact", "shared")
FEWSHOT_PLACEMENTS = ("auto", *demonstrations.PLACEMENTS)  # auto: lm-eval's convention
MAX_CACHE_GB = 2**20  # GiB (1 PiB): a KV bound above it is a typo, not a memory size

# setting -> (accepted values, the first the default; what to write instead)
CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "condition": (
        (*CONDITIONS, PAIRED),
        "interrupted (the benchmark), nocut, single, or paired (all three, with the paired costs)",
    ),
    "fewshot_placement": (
        FEWSHOT_PLACEMENTS,
        "auto (lm-eval's convention), turns (chat turns) or system (in the system prompt)",
    ),
    "turn_batching": (
        TURN_BATCHING,
        "auto (the session engine on hf, exact elsewhere), exact or shared",
    ),
}


def shown(value: object) -> str:
    """A metadata value as the user wrote it in JSON or YAML (``true``, ``"abc"``)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def check_choice(key: str, value: object) -> str:
    """``metadata.<key>`` as one of :data:`CHOICES`, or ConfigError naming the fix."""
    allowed, hint = CHOICES[key]
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"metadata {key} is {shown(value)}; use {hint}")
    return value


def check_cache_gb(value: object) -> float:
    """``metadata.max_cache_gb``, the session engine's KV bound in GiB, as a float; or
    ConfigError naming the value, the accepted range and the fix."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < MAX_CACHE_GB:
        return float(value)
    raise ConfigError(
        f"metadata max_cache_gb is {shown(value)}; it is the session engine's KV cache "
        f"bound in GiB, a number above 0 and below {MAX_CACHE_GB} (leave it out for the "
        "default: half the free accelerator memory, or a quarter of RAM on the CPU)"
    )


@dataclass(frozen=True)
class RunSettings:
    """The settings of one request's sessions (one episode), checked when made."""

    chat: bool = False  # the model's chat template (--apply_chat_template), else plain text
    fewshot: Sequence[Messages] = ()  # demonstration sessions, before the session
    fewshot_placement: str = "turns"  # turns (chat turns) or system (in the system prompt)
    condition: str = "interrupted"  # interrupted | nocut | single | paired
    budget_cap: int = CONTROL_BUDGET  # the controls raise every budget to it
    system_instruction: str | None = None  # --system_instruction
    generation_kwargs: Mapping[str, Any] = field(default_factory=dict)  # max_gen_toks left out
    turn_batching: str = "auto"  # auto | exact | shared
    max_cache_gb: float | None = None  # the session engine's KV bound; None: its default

    def __post_init__(self) -> None:
        check_choice("condition", self.condition)
        check_choice("turn_batching", self.turn_batching)
        if self.fewshot_placement not in demonstrations.PLACEMENTS:  # auto is the task's
            raise ConfigError(
                f"fewshot_placement is {shown(self.fewshot_placement)}; use turns or system"
            )
        object.__setattr__(self, "budget_cap", check_budget_cap(self.budget_cap))
        if self.max_cache_gb is not None:
            object.__setattr__(self, "max_cache_gb", check_cache_gb(self.max_cache_gb))
        check_sampling_values(dict(self.generation_kwargs))

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> RunSettings:
        """The settings an Instance carries (:meth:`to_args`), checked again: a request may
        come from ``--cache_requests``, written by another version."""
        return cls(**args)

    def to_args(self) -> dict[str, Any]:
        """The settings as the Instance carries them (and ``--log_samples`` logs them)."""
        args = {
            "fewshot": list(self.fewshot),
            "fewshot_placement": self.fewshot_placement,
            "condition": self.condition,
            "budget_cap": self.budget_cap,
            "chat": self.chat,
            "system_instruction": self.system_instruction,
            "generation_kwargs": dict(self.generation_kwargs),
            "turn_batching": self.turn_batching,
        }
        if self.max_cache_gb is not None:
            args["max_cache_gb"] = self.max_cache_gb
        return args

    @property
    def generation_key(self) -> str:
        """The generation kwargs as text: sessions with the same key share one engine run
        (and, under ``shared``, one ``max_gen_toks``)."""
        return json.dumps(dict(self.generation_kwargs), sort_keys=True)

    @property
    def greedy(self) -> bool:
        return not self.generation_kwargs.get("do_sample")

    @property
    def shares_budgets(self) -> bool:
        """Whether one turn's requests go out through ``generate_until`` with one shared
        ``max_gen_toks`` (the largest budget) and are cut to their own budgets afterwards.

        Only ``shared`` does. ``generate_until`` returns text, so the cut re-encodes it,
        and re-encoding decoded text does not always give back the generated ids (a
        decoded ``'café \\ufffd'`` re-encodes to more tokens than were generated): the
        kept text can differ from a generation capped at the budget. ``auto`` therefore
        replays on the session engine for local Hugging Face models (which cuts on the
        generated ids) and with exact per-request budgets on every other backend."""
        return self.turn_batching == "shared"

    def stop_strings(self) -> list[str]:
        """What ends a turn besides EOS and the budget: the task's ``until`` (default:
        the next question's opening tag; one string is one stop string, as in lm-eval's
        models), plus the next ``User:`` line in plain mode."""
        until = stop_list(self.generation_kwargs.get("until"))
        return turn_contract.stop_strings(self.chat, until)

    def turn_kwargs(self, max_gen_toks: int) -> dict[str, Any]:
        """A turn's ``generate_until`` kwargs (also its key in lm-eval's ``--use_cache``)."""
        return {
            "do_sample": False,
            **self.generation_kwargs,
            "until": self.stop_strings(),
            "max_gen_toks": max_gen_toks,
        }
