"""Admission control of the session engine: a session is seated only when the KV bound
(``max_cache_gb``) allows its next turn beside the seated ones, so a bound that fits two
sessions runs four of them two at a time, with the texts of an unbounded run; a turn that
outgrows the bound beside another gives up its slot and waits instead of failing; a
session that cannot fit even alone is an error naming the bound and the argument that
raises it."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .test_engine import BUDGETS, Chat

FILLER = " ".join(f"item {i} is {i * 7 % 11} and" for i in range(60))


@pytest.fixture(scope="module")
def model_and_tok(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    return model, tok


class Recorded(Chat):
    """A :class:`Chat` that keeps the KV need of every turn it asks for, in tokens:
    context + budget - 1 (the last generated id is never fed)."""

    def __init__(self, tokenizer, text):
        super().__init__(tokenizer, text)
        self.needs: list[int] = []

    def step(self, done):
        ask = super().step(done)
        if ask is not None:
            self.needs.append(len(ask.context) + ask.budget - 1)
        return ask


def _sessions(tok) -> list[Recorded]:
    """Four sessions of long, distinct contexts (no shared prefix: each begins with its
    own words), so every session's slot holds its whole context."""
    openings = ["Alpha", "Bravo", "Charlie", "Delta"]
    return [Recorded(tok, f"{word} session. {FILLER}\nAssistant:") for word in openings]


def _bytes_per_token(model) -> int:
    """Keys and values of one token across the layers, float32."""
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    return c.num_hidden_layers * c.num_key_value_heads * head_dim * 2 * 4


def _run(model, tok, sessions, **kwargs):
    from local_models.engine import SessionEngine

    decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    engine = SessionEngine(model, decode, eos_ids=[tok.eos_token_id], batch_size=4, **kwargs)
    stats = engine.run(sessions)
    return stats, [[(d.ids, d.text, d.cut) for d in s.done] for s in sessions]


def _unbounded(model, tok):
    """The unbounded run's turns, the smallest first-turn KV need and the largest turn's."""
    sessions = _sessions(tok)
    stats, turns = _run(model, tok, sessions)
    assert stats.max_rows == 4 and stats.evictions == 0
    first = min(s.needs[0] for s in sessions)
    largest = max(n for s in sessions for n in s.needs)
    return turns, first, largest


def _gb(model, tokens: int) -> float:
    return tokens * _bytes_per_token(model) / 2**30


def test_a_bound_for_two_sessions_seats_two_of_four(model_and_tok):
    """Room for two sessions' longest turns but not three first turns: all four sessions
    complete, never more than two seated at once, and every turn's ids, text and cut are
    the unbounded run's."""
    model, tok = model_and_tok
    unbounded, first, largest = _unbounded(model, tok)
    tokens = 2 * largest + 64  # a little room for holes left by re-tokenised text
    assert 3 * first > tokens  # a third session never fits
    stats, turns = _run(model, tok, _sessions(tok), max_cache_gb=_gb(model, tokens))
    assert stats.max_rows == 2
    assert all(len(t) == len(BUDGETS) for t in turns)
    assert turns == unbounded


def test_a_turn_that_outgrows_the_bound_waits(model_and_tok):
    """Room for two first turns but not two last turns: a turn that no longer fits beside
    another gives up its slot and is seated again later (prefilled afresh), instead of a
    MemoryError in the middle of the run; the texts are still the unbounded run's."""
    model, tok = model_and_tok
    unbounded, first, largest = _unbounded(model, tok)
    tokens = 2 * first + 4
    assert 2 * largest > tokens >= largest
    stats, turns = _run(model, tok, _sessions(tok), max_cache_gb=_gb(model, tokens))
    assert stats.max_rows == 2
    assert stats.evictions > 0
    assert turns == unbounded


def test_a_session_that_cannot_fit_alone_is_named(model_and_tok):
    """A bound below one session's first turn: an error before any pass, naming the
    bound and the argument that raises it."""
    model, tok = model_and_tok
    _, first, _ = _unbounded(model, tok)
    with pytest.raises(MemoryError, match=r"over the bound of .* GiB; raise max_cache_gb"):
        _run(model, tok, _sessions(tok), max_cache_gb=_gb(model, first // 2))
