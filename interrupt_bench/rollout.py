"""Token-level rollouts of interrupted sessions for training, on the same replay loop and
scorer as the lm-eval tasks.

:class:`SamplingResponder` plugs into :func:`interrupt_bench.session.replay`. It keeps
every session as token ids, exactly as sampled: template and question tokens are
appended as the template renders them (never re-tokenising what the model wrote), and a
mask marks the tokens the model sampled, the only ones that enter the loss. With
``kv_cache=True`` each turn prefills only the new tokens on top of the cache of earlier
turns; with ``False`` it re-encodes the whole history every turn (for comparison).

All sessions advance in one batch. A row with nothing to do in a forward pass is fed a
masked pad; pads attend only to themselves, so they never produce NaNs, and positions
count real tokens only, so a sequence's numbers do not depend on its neighbours' pads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from interrupt_bench import prompts
from interrupt_bench.episodes import Episode
from interrupt_bench.session import TurnRequest, TurnResult, conversation

PLACEHOLDER = "\ue000"  # stands for an assistant message while rendering the template


def growing_cache():
    """A ``DynamicCache`` whose layers grow a buffer by doubling instead of concatenating
    on every step: concatenation copies the whole cache per token, which on long
    multi-turn sessions costs more than the model itself."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._k = self._v = None
                self._len = 0
            end = self._len + key_states.shape[-2]
            if self._k is None or end > self._k.shape[-2]:
                capacity = max(end, 2 * (0 if self._k is None else self._k.shape[-2]), 256)
                k = key_states.new_empty((*key_states.shape[:-2], capacity, key_states.shape[-1]))
                v = value_states.new_empty(
                    (*value_states.shape[:-2], capacity, value_states.shape[-1])
                )
                if self._len:
                    k[..., : self._len, :] = self._k[..., : self._len, :]
                    v[..., : self._len, :] = self._v[..., : self._len, :]
                self._k, self._v = k, v
            self._k[..., self._len : end, :] = key_states
            self._v[..., self._len : end, :] = value_states
            self._len = end
            self.keys, self.values = self._k[..., :end, :], self._v[..., :end, :]
            return self.keys, self.values

    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowingLayer
    return cache


def render(tokenizer, messages: list[dict[str, str]], chat: bool) -> str:
    if chat:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompts.plain_transcript(messages)


def turn_deltas(tokenizer, episode: Episode, chat: bool, system: bool = True) -> list[str]:
    """Text to append before each turn's generation: delta[0] is the whole first prompt,
    delta[t] what the template puts after assistant message t-1 up to the generation
    prompt of turn t. Concatenating deltas and outputs gives the rendered conversation."""
    deltas = []
    for t in range(episode.n_turns):
        text = render(tokenizer, conversation(episode, [PLACEHOLDER] * t, system=system), chat)
        if t and text.count(PLACEHOLDER) != t:
            raise ValueError(
                "the chat template does not render assistant messages verbatim; training "
                "needs one that does (or use plain mode)"
            )
        deltas.append(text.rsplit(PLACEHOLDER, 1)[-1] if t else text)
    return deltas


@dataclass
class SessionTokens:
    """One session as the model saw it."""

    ids: list[int] = field(default_factory=list)
    sampled: list[bool] = field(default_factory=list)  # True where the model sampled the id
    logprobs: list[float] = field(default_factory=list)  # sampler's log-prob (0 elsewhere)
    turns_done: int = 0
    fed: int = 0  # how many ids are in the KV cache

    def extend(self, ids: Sequence[int]) -> None:
        self.ids.extend(ids)
        self.sampled.extend([False] * len(ids))
        self.logprobs.extend([0.0] * len(ids))


class SamplingResponder:
    """Answers replay's turn requests by sampling from ``model`` (a causal LM)."""

    def __init__(
        self,
        model,
        tokenizer,
        episodes: Sequence[Episode],
        chat: bool = True,
        temperature: float = 1.0,
        greedy: bool = False,
        kv_cache: bool = True,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.greedy, self.kv_cache = temperature, greedy, kv_cache
        self.deltas = [
            [
                tokenizer.encode(d, add_special_tokens=False)
                for d in turn_deltas(tokenizer, ep, chat)
            ]
            for ep in episodes
        ]
        self.sessions = [SessionTokens() for _ in episodes]
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos_id = tokenizer.eos_token_id
        self.cache = None
        self.real = torch.zeros(len(episodes), 0, dtype=torch.bool, device=self.device)  # cache
        self.generated_tokens = 0

    # -- the batched forward pass --------------------------------------------------------
    def _forward(self, rows: list[list[int]]):
        """Feed each row's new ids (left-padded to one length) on top of the cache."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long, device=self.device)
        real_new = torch.zeros(len(rows), width, dtype=torch.bool, device=self.device)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r) :] = torch.tensor(r, device=self.device)
                real_new[i, width - len(r) :] = True
        real = torch.cat([self.real, real_new], dim=1)
        past = self.real.shape[1]
        # Positions count real tokens only; a pad takes its predecessor's position.
        positions = (real.long().cumsum(1) - 1).clamp(min=0)[:, past:]
        q = torch.arange(past, past + width, device=self.device)[:, None]
        k = torch.arange(past + width, device=self.device)[None, :]
        allowed = (k <= q)[None] & real[:, None, :]
        allowed |= (k == q)[None] & ~real_new[:, :, None]  # a pad sees only itself
        mask = torch.zeros(allowed.shape, dtype=self.model.dtype, device=self.device)
        mask.masked_fill_(~allowed, torch.finfo(self.model.dtype).min)
        if self.cache is None:
            self.cache = growing_cache()
        out = self.model(
            input_ids=ids,
            attention_mask=mask[:, None],
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
        )
        self.real = real
        logits = out.logits[:, -1].float()
        if not bool(torch.isfinite(logits).all()):
            raise FloatingPointError(
                "the model produced non-finite logits: its weights have diverged (lower the "
                "learning rate, or resume from an earlier checkpoint)"
            )
        return logits

    def _reset_cache(self) -> None:
        self.cache = None
        self.real = self.real[:, :0]
        for s in self.sessions:
            s.fed = 0

    @torch.no_grad()
    def __call__(self, requests: list[TurnRequest]) -> list[TurnResult]:
        if not self.kv_cache:
            self._reset_cache()
        budgets = torch.zeros(len(self.sessions), dtype=torch.long, device=self.device)
        for r in requests:
            s = self.sessions[r.session]
            for t in range(s.turns_done, r.turn + 1):  # budget-0 turns skipped before this one
                s.extend(self.deltas[r.session][t])
            s.turns_done = r.turn + 1
            budgets[r.session] = r.budget
        rows = [s.ids[s.fed :] for s in self.sessions]
        logits = self._forward(rows)
        for s in self.sessions:
            s.fed = len(s.ids)
        produced: list[list[int]] = [[] for _ in self.sessions]
        finished = budgets == 0
        for _step in range(int(budgets.max())):
            scaled = logits / max(self.temperature, 1e-6)
            logp = torch.log_softmax(scaled, dim=-1)
            if self.greedy:
                token = logits.argmax(-1)
            else:
                token = torch.multinomial(logp.exp(), 1).squeeze(1)
            token_logp = logp.gather(1, token[:, None]).squeeze(1)
            active = ~finished
            for i in active.nonzero().flatten().tolist():
                produced[i].append(int(token[i]))
                s = self.sessions[i]
                s.ids.append(int(token[i]))
                s.sampled.append(True)
                s.logprobs.append(float(token_logp[i]))
            self.generated_tokens += int(active.sum())
            lengths = torch.tensor([len(p) for p in produced], device=self.device)
            finished = finished | (lengths >= budgets)
            if self.eos_id is not None:
                finished |= active & (token == self.eos_id)
            if bool(finished.all()):
                break
            logits = self._forward(
                [[int(token[i])] if active[i] else [] for i in range(len(produced))]
            )
            for i in active.nonzero().flatten().tolist():
                self.sessions[i].fed += 1
        results = []
        for r in requests:
            ids = produced[r.session]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            stopped = bool(ids) and ids[-1] == self.eos_id
            results.append(
                TurnResult(text, cut=len(ids) >= r.budget and not stopped, n_tokens=len(ids))
            )
        return results
