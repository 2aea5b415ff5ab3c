"""How a turn's tokens are chosen and when a turn ends: the settings (:class:`Sampling`,
checked the same way whatever backend generates), the sampler that draws every seated
session's next token from one pass's logits (:class:`Sampler`), and stop handling
(:func:`stopped`, :func:`finished_text`).

Each (session, turn) draws from its own generator seeded by :func:`turn_seed`, so sampled
outputs depend on the seed only, never on which sessions share a pass."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch

from interrupt_bench.errors import ConfigError

# Ids decoded past one per character of the longest stop string when looking for it at a
# turn's end: an id can decode to part of a character (a byte of UTF-8), so a stop string
# of n characters can span a few more than n ids.
STOP_TAIL_SLACK = 2


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen: greedy, or sampled at ``temperature`` with optional top-k
    and top-p filtering, from per-(session, turn) generators derived from ``seed``."""

    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    KNOWN = ("do_sample", "temperature", "top_k", "top_p", "until", "max_gen_toks")

    @classmethod
    def from_generation_kwargs(
        cls, kwargs: dict, seed: int = 0, backend: str = "session engine"
    ) -> Sampling:
        """lm-eval's ``generation_kwargs`` as a ``Sampling``; a key the engine cannot
        honour, or a value it would have to guess at, is a ``ConfigError`` naming the fix
        (and ``backend``, the engine that samples with it), never silently dropped or
        reinterpreted.

        ``do_sample=True`` with ``temperature=0`` is refused: lm-eval's ``hf`` model passes
        it to ``model.generate``, which refuses it too (temperature 0 is greedy decoding,
        which ``do_sample=False`` asks for). ``do_sample=True`` with no temperature samples
        at 1, as ``model.generate`` does."""
        unknown = sorted(set(kwargs) - set(cls.KNOWN))
        if unknown:
            raise ConfigError(
                f"generation_kwargs {unknown} are not supported by the {backend} "
                f"(it honours {list(cls.KNOWN)}); remove them, or set metadata "
                "turn_batching: exact to generate through the model's own generate_until"
            )
        check_sampling_values(kwargs)
        do_sample = kwargs.get("do_sample")
        temperature = float(kwargs.get("temperature") or 0.0)
        greedy = not do_sample if do_sample is not None else temperature == 0.0
        if not greedy and temperature == 0.0:
            if kwargs.get("temperature") is not None:
                raise ConfigError(
                    "generation_kwargs do_sample=True with temperature=0: temperature 0 is "
                    "greedy decoding, which sampling cannot do; use do_sample=False for "
                    "greedy, or a temperature above 0 to sample"
                )
            temperature = 1.0
        return cls(
            greedy=greedy,
            temperature=temperature if not greedy else 1.0,
            top_k=int(kwargs.get("top_k") or 0),
            top_p=float(kwargs.get("top_p") or 1.0),
            seed=seed,
        )


def check_sampling_values(kwargs: dict) -> None:
    """Refuse a sampling value of the wrong type or out of range (``ConfigError``, one line
    naming the key and what it takes), whatever backend generates: ``--gen_kwargs`` parses
    what it cannot read as a number into text (``temperature=abc``), and a negative
    ``top_k`` or a ``top_p`` outside (0, 1] has no meaning (``model.generate`` refuses
    both). ``until`` may be one string or a list of strings (:func:`stop_list`)."""

    def bad(key: str, wants: str) -> ConfigError:
        return ConfigError(
            f"generation_kwargs {key}={kwargs[key]!r} is not valid: {key} takes {wants} "
            "(--gen_kwargs or the task's generation_kwargs)"
        )

    def number(key: str) -> float | None:
        value = kwargs.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(key, "a number")
        if not math.isfinite(value):
            raise bad(key, "a finite number")
        return float(value)

    if kwargs.get("do_sample") is not None and not isinstance(kwargs["do_sample"], bool):
        raise bad("do_sample", "True or False")
    temperature = number("temperature")
    if temperature is not None and temperature < 0:
        raise bad("temperature", "a number >= 0 (0: greedy)")
    top_k = number("top_k")
    if top_k is not None and (top_k < 0 or top_k != int(top_k)):
        raise bad("top_k", "a whole number >= 0 (0: no top-k filtering)")
    top_p = number("top_p")
    if top_p is not None and not 0 < top_p <= 1:
        raise bad("top_p", "a number in (0, 1] (1: no nucleus filtering)")
    if "until" in kwargs:
        stop_list(kwargs["until"])


def stop_list(until: object) -> list[str]:
    """lm-eval's ``until`` as a list of stop strings: one string is one stop string (as
    lm-eval's models wrap it), never its characters, which ``list(text)`` would give
    (``--gen_kwargs until=</answer>`` parses to a string). None gives no stop strings."""
    if until is None:
        return []
    if isinstance(until, str):
        return [until]
    if isinstance(until, (list, tuple)) and all(isinstance(u, str) for u in until):
        return list(until)
    raise ConfigError(
        f"generation_kwargs until={until!r} is not valid: until takes a string or a list of "
        "strings (--gen_kwargs or the task's generation_kwargs)"
    )


def turn_seed(seed: int, session: int, turn: int) -> int:
    """The sampling seed of one (session, turn): outputs do not depend on batching."""
    digest = hashlib.sha256(f"{seed}/{session}/{turn}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def finished_text(decode: Callable[[list[int]], str], ids: list[int], eos: bool, stop) -> str:
    """The text a turn keeps: the decode of its ids (EOS left out), cut at the first
    stop string."""
    text = decode(ids[:-1] if eos else ids)
    for s in stop:
        text = text.split(s)[0]
    return text


def stopped(
    out: Sequence[int],
    stop: Sequence[str],
    eos_ids: Collection[int],
    decode: Callable[[list[int]], str],
) -> bool:
    """Whether a turn that generated ``out`` so far has ended by itself: its last id is an
    EOS, or a stop string appears in the decode of its last ids. Only the tail is decoded
    (the check runs after every token, so a stop string ends in the last id or was found
    before)."""
    if out and out[-1] in eos_ids:
        return True
    if stop:
        longest = max(len(s) for s in stop)
        tail = decode(list(out[-(longest + STOP_TAIL_SLACK) :]))
        return any(s in tail for s in stop)
    return False


class Sampler:
    """Chooses the next token of several sessions at once from their logits, greedily or
    by sampling (temperature, top-k, top-p), and returns the log-probability of each
    choice under the tempered distribution (before filtering), which training needs."""

    def __init__(self, sampling: Sampling, device: torch.device):
        self.sampling, self.device = sampling, device

    def generator(self, session: int, turn: int) -> torch.Generator | None:
        """The generator of one (session, turn); None when decoding greedily."""
        if self.sampling.greedy:
            return None
        g = torch.Generator(device=self.device)
        g.manual_seed(turn_seed(self.sampling.seed, session, turn))
        return g

    def choose(
        self, logits: torch.Tensor, generators: Sequence[torch.Generator | None]
    ) -> tuple[list[int], list[float]]:
        """One token per row of ``logits`` (``[n, vocab]``), drawn from ``generators[i]``
        for row i, and its log-probability."""
        s = self.sampling
        if s.greedy:
            logp = torch.log_softmax(logits, dim=-1)
            tokens = logits.argmax(-1)
            return tokens.tolist(), logp.gather(1, tokens[:, None]).squeeze(1).tolist()
        scaled = logits / s.temperature
        logp = torch.log_softmax(scaled, dim=-1)
        probs = torch.softmax(self._filter(scaled), dim=-1)
        tokens = [
            int(torch.multinomial(probs[i], 1, generator=g)) for i, g in enumerate(generators)
        ]
        t = torch.tensor(tokens, device=logits.device)
        return tokens, logp.gather(1, t[:, None]).squeeze(1).tolist()

    def _filter(self, scaled: torch.Tensor) -> torch.Tensor:
        """The tempered logits with what top-k and top-p leave out set to -inf."""
        s, filtered = self.sampling, scaled
        if s.top_k:
            kth = torch.topk(filtered, min(s.top_k, filtered.shape[-1]), dim=-1).values[:, -1:]
            filtered = filtered.masked_fill(filtered < kth, float("-inf"))
        if s.top_p < 1.0:
            sorted_logits, order = torch.sort(filtered, descending=True, dim=-1)
            cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
            drop = cum - torch.softmax(sorted_logits, dim=-1) >= s.top_p
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            filtered = torch.full_like(filtered, float("-inf")).scatter(1, order, sorted_logits)
        return filtered
