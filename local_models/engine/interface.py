"""What crosses the engine's boundary: the turn a session asks for (:class:`Ask`), the turn
it gets back (:class:`Generated`), the session itself (:class:`Driver`), and what a run
cost (:class:`EngineStats`). Both backends (this engine and :mod:`local_models.vllm_sessions`)
speak these types, so the drivers do not know which one generates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Ask:
    """One turn to generate: the session's whole context as token ids, at most ``budget``
    new tokens, and the strings that end the turn."""

    context: list[int]
    budget: int
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Generated:
    """One finished turn: the generated ids (EOS included when the model emitted it),
    the text kept (decoded, cut at the first stop string), whether the budget cut it, and
    the sampler's log-probability of each id (training uses them)."""

    ids: list[int]
    text: str
    cut: bool
    logprobs: list[float]
    eos: bool = False  # the last id is an EOS

    @property
    def n_tokens(self) -> int:
        """Generated tokens, EOS excluded."""
        return len(self.ids) - self.eos


class Driver(Protocol):
    """A session seen from the engine: ``step(None)`` gives the first turn, ``step(done)``
    the next one after ``done``; None ends the session."""

    def step(self, done: Generated | None) -> Ask | None: ...


@dataclass
class EngineStats:
    """What one run did, for logs and benchmarks (the vLLM backend fills the same fields
    it has a meaning for)."""

    generated_tokens: int = 0
    prefilled_tokens: int = 0
    reused_tokens: int = 0  # context tokens served from a slot's cache or a shared prefix
    forward_passes: int = 0
    prefill_passes: int = 0  # passes that prefilled (decoding sessions ride along)
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0  # passes that only decoded
    max_rows: int = 0  # the most sessions seated at once (rows of the batch)
    shared_prefix_sessions: int = 0  # sessions seated on a shared prefix (read once per pass)
    shared_prefixes: int = 0  # shared prefixes prefilled (each once)
    evictions: int = 0  # turns that gave up their slot to wait for the KV bound (see admission)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
