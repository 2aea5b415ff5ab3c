"""Session-aware generation: many multi-turn sessions on one local model, each keeping its
KV cache across turns, continuously batched.

Replaying sessions through a per-request API (``generate_until``, ``model.generate``)
wastes most of the machine: every turn re-prefills the whole history, a batch decodes
until its largest budget while finished rows ride along, and every session waits for the
slowest one at each turn. This engine instead:

- keeps one row of a slot KV cache per running session: a turn prefills only the tokens
  that differ from what the row already holds (the longest common prefix of the new
  context and the cached ids is reused, so a template that re-tokenises earlier text
  differently still gets exactly the ids a per-request call would see);
- prefills a prefix shared by many sessions (system prompt, demonstrations) once and
  copies its keys and values into each new row;
- lets a row leave the batch the moment its turn ends (EOS, stop string or budget) and
  gives it the session's next turn at once, or a new session when the session is over:
  continuous batching across sessions, up to ``batch_size`` rows and a KV memory bound.

Sessions talk to the engine through one narrow hook, :class:`Driver`: ``step(None)``
returns the first turn, ``step(result)`` the next one (or None when the session is
over). The replay semantics (what a turn's context is, budget-0 turns, scoring) stay in
the drivers; the engine only generates.

Correctness: the text of a turn is the decode of exactly the ids it generated (at most
the budget), cut at the first stop string; ``cut`` is true iff the budget ran out before
the model stopped. Greedy outputs equal per-request generation token for token (up to
the floating-point noise of different batch shapes); sampled outputs are reproducible
from a seed, whatever the batch size, because each (session, turn) draws from its own
generator."""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch


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
    def from_generation_kwargs(cls, kwargs: dict, seed: int = 0) -> Sampling:
        """lm-eval's ``generation_kwargs`` as a ``Sampling``; a key the engine cannot
        honour is an error, never silently dropped."""
        unknown = sorted(set(kwargs) - set(cls.KNOWN))
        if unknown:
            raise ValueError(
                f"generation_kwargs {unknown} are not supported by the session engine "
                f"(it honours {list(cls.KNOWN)}); remove them, or set metadata "
                "turn_batching: exact to generate through the model's own generate_until"
            )
        temperature = float(kwargs.get("temperature", 0.0) or 0.0)
        do_sample = kwargs.get("do_sample")
        greedy = not do_sample if do_sample is not None else temperature == 0.0
        if not greedy and temperature <= 0:
            temperature = 1.0
        return cls(
            greedy=greedy,
            temperature=temperature if not greedy else 1.0,
            top_k=int(kwargs.get("top_k", 0) or 0),
            top_p=float(kwargs.get("top_p", 1.0) or 1.0),
            seed=seed,
        )


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
    generated_tokens: int = 0
    prefilled_tokens: int = 0
    reused_tokens: int = 0  # context tokens served from a row's cache or a shared prefix
    forward_passes: int = 0
    max_rows: int = 0


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


# --------------------------------------------------------------------------------------
# The slot KV cache


class _SlotCache:
    """Keys and values of ``rows`` sessions, one row each, as ``[rows, heads, capacity,
    head_dim]`` buffers per layer (allocated on the first forward pass, grown by
    doubling). Which positions of a row hold live tokens is ``valid``; ``rope`` holds each
    position's token index in its session. The model sees it as a transformers ``Cache``
    through :meth:`as_hf_cache`; :meth:`plan` says where the next forward writes."""

    def __init__(self, rows: int, device: torch.device, capacity: int = 256):
        self.rows, self.device, self.capacity = rows, device, capacity
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.valid = torch.zeros(rows, capacity, dtype=torch.bool, device=device)
        self.rope = torch.zeros(rows, capacity, dtype=torch.long, device=device)
        self._rows_idx: torch.Tensor | None = None  # rows of the next forward (None: all)
        self._write: torch.Tensor | None = None  # [R, W] cache positions written
        self._kv_len = 0

    def bytes_per_token(self) -> int:
        if not self.keys:
            return 0
        k = self.keys[0]
        return 2 * len(self.keys) * k.shape[1] * k.shape[3] * k.element_size()

    def nbytes(self) -> int:
        return self.bytes_per_token() * self.rows * self.capacity

    def ensure_capacity(self, needed: int, max_bytes: float) -> None:
        if needed <= self.capacity:
            return
        new = max(needed, 2 * self.capacity)
        if self.bytes_per_token() * self.rows * new > max_bytes:
            new = needed  # grow only as far as needed once near the bound
        self.check(max_bytes, new)
        pad = new - self.capacity
        self.keys = [torch.nn.functional.pad(k, (0, 0, 0, pad)) for k in self.keys]
        self.values = [torch.nn.functional.pad(v, (0, 0, 0, pad)) for v in self.values]
        self.valid = torch.nn.functional.pad(self.valid, (0, pad))
        self.rope = torch.nn.functional.pad(self.rope, (0, pad))
        self.capacity = new

    def check(self, max_bytes: float, capacity: int | None = None) -> None:
        """Refuse a cache over ``max_bytes``, naming what would fix it."""
        capacity = capacity or self.capacity
        need = self.bytes_per_token() * self.rows * capacity
        if need > max_bytes:
            raise MemoryError(
                f"the KV cache would need {need / 2**30:.3g} GiB for {self.rows} sessions of "
                f"{capacity} tokens, over the bound of {max_bytes / 2**30:.3g} GiB; lower "
                "the batch size or raise max_cache_gb"
            )

    def keep_rows(self, rows: list[int]) -> None:
        """Shrink to the given rows (in that order): the batch has thinned out."""
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.keys = [k.index_select(0, idx) for k in self.keys]
        self.values = [v.index_select(0, idx) for v in self.values]
        self.valid, self.rope = self.valid[idx], self.rope[idx]
        self.rows = len(rows)

    def plan(self, rows: torch.Tensor | None, write: torch.Tensor, kv_len: int) -> None:
        self._rows_idx, self._write, self._kv_len = rows, write, kv_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        if layer == len(self.keys):  # first forward: allocate this layer's buffers
            self._allocate(k)
        kb, vb = self.keys[layer], self.values[layer]
        rows = self._rows_idx
        r = (torch.arange(self.rows, device=self.device) if rows is None else rows)[:, None]
        kb[r, :, self._write] = k.transpose(1, 2)
        vb[r, :, self._write] = v.transpose(1, 2)
        if rows is None:
            return kb[:, :, : self._kv_len], vb[:, :, : self._kv_len]
        return kb[rows, :, : self._kv_len], vb[rows, :, : self._kv_len]

    def _allocate(self, like: torch.Tensor) -> None:
        shape = (self.rows, like.shape[1], self.capacity, like.shape[3])
        self.keys.append(torch.zeros(shape, dtype=like.dtype, device=like.device))
        self.values.append(torch.zeros(shape, dtype=like.dtype, device=like.device))

    def copy_in(self, row: int, keys: list[torch.Tensor], values: list[torch.Tensor], n: int):
        """Put ``n`` positions of a stored prefix at the start of ``row``."""
        while len(self.keys) < len(keys):
            self._allocate(keys[len(self.keys)])
        for layer, (k, v) in enumerate(zip(keys, values)):
            self.keys[layer][row, :, :n] = k[0, :, :n]
            self.values[layer][row, :, :n] = v[0, :, :n]

    def copy_out(self, row: int, n: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return (
            [k[row : row + 1, :, :n].clone() for k in self.keys],
            [v[row : row + 1, :, :n].clone() for v in self.values],
        )

    def compact(self, row: int, positions: list[int]) -> None:
        """Move a row's live positions to its start, in order (reclaims holes)."""
        idx = torch.tensor(positions, dtype=torch.long, device=self.device)
        n = len(positions)
        for layer in range(len(self.keys)):
            self.keys[layer][row, :, :n] = self.keys[layer][row].index_select(1, idx)
            self.values[layer][row, :, :n] = self.values[layer][row].index_select(1, idx)
        self.valid[row] = False
        self.valid[row, :n] = True
        self.rope[row, :n] = torch.arange(n, device=self.device)

    def as_hf_cache(self):
        from transformers.cache_utils import Cache

        slots = self

        class SlotCacheView(Cache):
            """What the model's attention layers call: ``update`` writes this forward's
            keys and values where the plan says and returns the rows' whole buffers."""

            def __init__(self):
                super().__init__(layers=[])

            def update(self, key_states, value_states, layer_idx, *args, **kwargs):
                return slots.update(layer_idx, key_states, value_states)

            def get_seq_length(self, layer_idx: int = 0) -> int:
                return slots._kv_len

            @property
            def is_compileable(self) -> bool:
                return False

        return SlotCacheView()


# --------------------------------------------------------------------------------------
# Rows and the engine


@dataclass
class _Row:
    driver: int
    ask: Ask
    ids: list[int] = field(default_factory=list)  # ids in the cache, in session order
    pos: list[int] = field(default_factory=list)  # their cache positions
    todo: list[int] = field(default_factory=list)  # ids still to feed
    end: int = 0  # first never-written cache position
    out: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turn: int = 0
    generator: torch.Generator | None = None


@dataclass
class _Prefix:
    ids: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


MIN_SHARED_PREFIX = 16  # tokens: shorter common prefixes are not worth a copy


class SessionEngine:
    """Generates every turn of many sessions on one causal LM (see the module docstring).

    ``model`` is any transformers causal LM that accepts ``past_key_values``, 4-D
    attention masks and ``position_ids`` (Llama, Qwen, Mistral, Gemma 3, …, and peft
    wrappers of them); ``decode`` turns ids into text (the evaluated tokenizer's);
    ``eos_ids`` end a turn. ``batch_size`` bounds the rows decoded together,
    ``max_cache_gb`` the KV cache, ``prefill_tokens`` the tokens (rows × width) of one
    prefill forward pass."""

    def __init__(
        self,
        model,
        decode: Callable[[list[int]], str],
        *,
        eos_ids: Sequence[int] = (),
        batch_size: int = 32,
        sampling: Sampling = Sampling(),
        max_cache_gb: float | None = None,
        prefill_tokens: int = 4096,
        max_length: int | None = None,
        progress: Callable[[int], None] | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model, self.decode = model, decode
        self.eos_ids = set(int(i) for i in eos_ids)
        self.batch_size, self.sampling = batch_size, sampling
        self.prefill_tokens = max(1, prefill_tokens)
        self.max_length = max_length
        self.max_bytes = (max_cache_gb * 2**30) if max_cache_gb else default_cache_bytes(model)
        self.progress = progress
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        config = getattr(model, "config", None)
        self.layer_types = list(getattr(config, "layer_types", None) or [])
        self.window = getattr(config, "sliding_window", None)
        unknown = set(self.layer_types) - {"full_attention", "sliding_attention"}
        if unknown:
            raise NotImplementedError(
                "the session engine knows full and sliding-window attention, not "
                f"{sorted(unknown)}; use metadata turn_batching: exact for this model"
            )
        self.stats = EngineStats()

    # -- the forward pass ---------------------------------------------------------------
    def _masks(self, cache: _SlotCache, rows, write, real_q, qrope, kv_len):
        valid = cache.valid if rows is None else cache.valid[rows]
        rope = cache.rope if rows is None else cache.rope[rows]
        valid, rope = valid[:, :kv_len], rope[:, :kv_len]
        k = torch.arange(kv_len, device=self.device)
        allowed = valid[:, None, :] & (k[None, None, :] <= write[:, :, None])
        allowed |= (~real_q)[:, :, None] & (k[None, None, :] == write[:, :, None])
        masks = {"full_attention": allowed}
        if "sliding_attention" in self.layer_types:
            near = (qrope[:, :, None] - rope[:, None, :]) < self.window
            masks["sliding_attention"] = allowed & (near | ~real_q[:, :, None])
        out = {}
        for name, m in masks.items():
            f = torch.zeros(m.shape, dtype=self.dtype, device=self.device)
            f.masked_fill_(~m, torch.finfo(self.dtype).min)
            out[name] = f[:, None]
        return out if self.layer_types and len(out) > 1 else out["full_attention"]

    def _forward(
        self,
        cache: _SlotCache,
        rows: list[int] | None,
        feeds: dict[int, list[int]],
        states: dict[int, _Row],
    ) -> torch.Tensor:
        """Feed ``feeds[row]`` (ids) to each row (all rows when ``rows`` is None, pads for
        those without ids) and return the logits after each row's last id."""
        order = list(range(cache.rows)) if rows is None else rows
        width = max(len(feeds.get(r, ())) for r in order) or 1
        n_rows = len(order)
        ids = torch.zeros(n_rows, width, dtype=torch.long)
        write = torch.zeros(n_rows, width, dtype=torch.long)
        real_q = torch.zeros(n_rows, width, dtype=torch.bool)
        qrope = torch.zeros(n_rows, width, dtype=torch.long)
        ends = []
        for i, r in enumerate(order):
            feed = feeds.get(r, [])
            state = states.get(r)
            end = state.end if state is not None else 0
            n = len(feed)
            pads = width - n
            # Left-padded queries; real ids are written at end.., pads after them
            # (overwritten later, never valid), so pads leave no holes in the row.
            write[i, pads:] = torch.arange(end, end + n)
            write[i, :pads] = torch.arange(end + n, end + n + pads)
            if n:
                ids[i, pads:] = torch.tensor(feed)
                real_q[i, pads:] = True
                start = len(state.ids)
                qrope[i, pads:] = torch.arange(start, start + n)
            ends.append(end + width)
        kv_len = max(ends)
        cache.ensure_capacity(kv_len, self.max_bytes)
        ids, write = ids.to(self.device), write.to(self.device)
        real_q, qrope = real_q.to(self.device), qrope.to(self.device)
        row_idx = None if rows is None else torch.tensor(rows, device=self.device)
        # Mark the real new positions live before building the masks.
        r_all = torch.arange(cache.rows, device=self.device) if rows is None else row_idx
        rr = r_all[:, None].expand_as(write)
        cache.valid[rr[real_q], write[real_q]] = True
        cache.rope[rr[real_q], write[real_q]] = qrope[real_q]
        masks = self._masks(cache, row_idx, write, real_q, qrope, kv_len)
        cache.plan(row_idx, write, kv_len)
        out = self.model(
            input_ids=ids,
            attention_mask=masks,
            position_ids=qrope,
            past_key_values=cache.as_hf_cache(),
            use_cache=True,
            logits_to_keep=1,
        )
        self.stats.forward_passes += 1
        cache.check(self.max_bytes)
        for r in order:
            feed = feeds.get(r, [])
            if feed:
                state = states[r]
                state.pos.extend(range(state.end, state.end + len(feed)))
                state.ids.extend(feed)
                state.end += len(feed)
        logits = out.logits[:, -1].float()
        if not bool(torch.isfinite(logits).all()):
            raise FloatingPointError(
                "the model produced non-finite logits (diverged weights, or a dtype too "
                "narrow for this model: try dtype=float32)"
            )
        return logits

    # -- sampling ------------------------------------------------------------------------
    def _choose(self, logits: torch.Tensor, rows: list[_Row]) -> tuple[list[int], list[float]]:
        s = self.sampling
        if s.greedy:
            logp = torch.log_softmax(logits, dim=-1)
            tokens = logits.argmax(-1)
            return tokens.tolist(), logp.gather(1, tokens[:, None]).squeeze(1).tolist()
        scaled = logits / s.temperature
        logp = torch.log_softmax(scaled, dim=-1)
        filtered = scaled
        if s.top_k:
            kth = torch.topk(filtered, min(s.top_k, filtered.shape[-1]), dim=-1).values[:, -1:]
            filtered = filtered.masked_fill(filtered < kth, float("-inf"))
        if s.top_p < 1.0:
            sorted_logits, order = torch.sort(filtered, descending=True, dim=-1)
            cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
            drop = cum - torch.softmax(sorted_logits, dim=-1) >= s.top_p
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            filtered = torch.full_like(filtered, float("-inf")).scatter(1, order, sorted_logits)
        probs = torch.softmax(filtered, dim=-1)
        tokens = [
            int(torch.multinomial(probs[i], 1, generator=row.generator))
            for i, row in enumerate(rows)
        ]
        t = torch.tensor(tokens, device=logits.device)
        return tokens, logp.gather(1, t[:, None]).squeeze(1).tolist()

    def _generator(self, driver: int, turn: int) -> torch.Generator | None:
        if self.sampling.greedy:
            return None
        digest = hashlib.sha256(f"{self.sampling.seed}/{driver}/{turn}".encode()).digest()
        g = torch.Generator(device=self.device)
        g.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
        return g

    # -- turns -----------------------------------------------------------------------------
    def _stopped(self, row: _Row) -> bool:
        if row.out and row.out[-1] in self.eos_ids:
            return True
        if row.ask.stop:
            longest = max(len(s) for s in row.ask.stop)
            tail = self.decode(row.out[-(longest + 2) :])
            return any(s in tail for s in row.ask.stop)
        return False

    def _finish(self, row: _Row, stopped: bool) -> Generated:
        ids = list(row.out)
        eos = bool(ids) and ids[-1] in self.eos_ids
        text = self.decode(ids[:-1] if eos else ids)
        for s in row.ask.stop:
            text = text.split(s)[0]
        return Generated(ids, text, cut=not stopped, logprobs=list(row.logprobs), eos=eos)

    def _check_ask(self, ask: Ask, driver: int) -> None:
        if ask.budget < 1:
            raise ValueError(
                f"session {driver}: a turn's budget must be at least 1, got {ask.budget}"
            )
        if not ask.context:
            raise ValueError(f"session {driver}: a turn's context is empty")
        if self.max_length and len(ask.context) + ask.budget > self.max_length:
            raise ValueError(
                f"session {driver} needs {len(ask.context)} context tokens + a budget of "
                f"{ask.budget}, over the model's max_length {self.max_length}; use fewer "
                "demonstrations (--num_fewshot) or a model with a longer context"
            )

    def _start_turn(self, cache: _SlotCache, slot: int, row: _Row, ask: Ask) -> None:
        """Point ``row`` at its next turn, reusing the longest cached prefix."""
        self._check_ask(ask, row.driver)
        keep = min(common_prefix(row.ids, ask.context), len(ask.context) - 1)
        if keep < len(row.ids):
            dead = torch.tensor(row.pos[keep:], dtype=torch.long, device=self.device)
            cache.valid[slot, dead] = False
            del row.ids[keep:], row.pos[keep:]
        if row.end > 2 * len(row.ids) + 256:  # too many holes: compact
            cache.compact(slot, row.pos)
            row.pos, row.end = list(range(len(row.ids))), len(row.ids)
        self.stats.reused_tokens += keep
        row.ask, row.todo, row.out, row.logprobs = ask, list(ask.context[keep:]), [], []
        row.generator = self._generator(row.driver, row.turn)

    def _seat(
        self, cache: _SlotCache, slot: int, driver: int, ask: Ask, prefixes: list[_Prefix]
    ) -> _Row:
        """A new session in ``slot``: the best shared prefix is copied in."""
        cache.valid[slot] = False
        row = _Row(driver=driver, ask=ask)
        best, n = None, 0
        for p in prefixes:
            k = min(common_prefix(p.ids, ask.context), len(ask.context) - 1)
            if k > n:
                best, n = p, k
        if best is not None and n >= MIN_SHARED_PREFIX:
            cache.ensure_capacity(n + 1, self.max_bytes)
            cache.copy_in(slot, best.keys, best.values, n)
            cache.valid[slot, :n] = True
            cache.rope[slot, :n] = torch.arange(n, device=self.device)
            row.ids, row.pos, row.end = list(ask.context[:n]), list(range(n)), n
        self._start_turn(cache, slot, row, ask)
        return row

    def _prefill_prefixes(self, contexts: list[list[int]]) -> list[_Prefix]:
        """Common prefixes of groups of first contexts, each prefilled once."""
        groups: list[list[int]] = []
        ordered = sorted(range(len(contexts)), key=lambda i: contexts[i])
        best: list[int] | None = None
        for i in ordered:
            ctx = contexts[i]
            if best is not None:
                k = common_prefix(best, ctx)
                if k >= max(MIN_SHARED_PREFIX, len(best) // 2):
                    best = best[:k]
                    groups[-1].append(i)
                    continue
            groups.append([i])
            best = ctx[:-1]
        prefixes = []
        for group in groups:
            if len(group) < 2:
                continue
            ids = contexts[group[0]]
            for i in group[1:]:
                ids = ids[: common_prefix(ids, contexts[i])]
            if len(ids) < MIN_SHARED_PREFIX:
                continue
            cache = _SlotCache(1, self.device, capacity=len(ids) + 1)
            row = _Row(driver=-1, ask=Ask(ids, 1))
            for start in range(0, len(ids), self.prefill_tokens):
                self._forward(cache, None, {0: ids[start : start + self.prefill_tokens]}, {0: row})
            self.stats.prefilled_tokens += len(ids)
            keys, values = cache.copy_out(0, len(ids))
            prefixes.append(_Prefix(ids, keys, values))
        return prefixes

    @torch.no_grad()
    def run(self, drivers: Sequence[Driver]) -> EngineStats:
        """Generate every turn of every session; results go back through the drivers."""
        first: dict[int, Ask] = {}
        for i, d in enumerate(drivers):
            ask = d.step(None)
            if ask is not None:
                self._check_ask(ask, i)
                first[i] = ask
        prefixes = self._prefill_prefixes([a.context for a in first.values()])
        pending = deque(first)
        cache = _SlotCache(min(self.batch_size, max(len(pending), 1)), self.device)
        rows: dict[int, _Row] = {}  # slot -> row
        while pending or rows:
            # Seat new sessions in free slots while the KV bound allows.
            for slot in range(cache.rows):
                if not pending:
                    break
                if slot in rows:
                    continue
                d = pending.popleft()
                rows[slot] = self._seat(cache, slot, d, first.pop(d), prefixes)
            self.stats.max_rows = max(self.stats.max_rows, len(rows))
            # Prefill: rows with more than one id to feed, a few at a time.
            need = sorted(
                (s for s, r in rows.items() if len(r.todo) > 1), key=lambda s: len(rows[s].todo)
            )
            ready: list[tuple[int, torch.Tensor]] = []
            if need:
                chosen, feeds, width = [], {}, 0
                for s in need:
                    chunk = min(len(rows[s].todo), self.prefill_tokens)
                    if chosen and (len(chosen) + 1) * max(width, chunk) > self.prefill_tokens:
                        break
                    chosen.append(s)
                    width = max(width, chunk)
                    feeds[s] = rows[s].todo[:chunk]
                logits = self._forward(cache, chosen, feeds, rows)
                for i, s in enumerate(chosen):
                    r = rows[s]
                    self.stats.prefilled_tokens += len(feeds[s])
                    del r.todo[: len(feeds[s])]
                    if not r.todo:
                        ready.append((s, logits[i]))
            # Decode: rows with exactly one id to feed (their last sampled token, or a
            # one-token context delta), batched over all slots (pads elsewhere).
            step = {s: list(r.todo) for s, r in rows.items() if len(r.todo) == 1}
            if step:
                use_all = len(step) * 2 >= cache.rows
                order = None if use_all else sorted(step)
                logits = self._forward(cache, order, step, rows)
                index = list(range(cache.rows)) if use_all else order
                for s in step:
                    rows[s].todo.clear()
                    ready.append((s, logits[index.index(s)]))
            if not ready:
                continue
            slots = [s for s, _ in ready]
            logits = torch.stack([lg for _, lg in ready])
            tokens, logps = self._choose(logits, [rows[s] for s in slots])
            for s, token, lp in zip(slots, tokens, logps):
                r = rows[s]
                r.out.append(token)
                r.logprobs.append(lp)
                self.stats.generated_tokens += 1
                stopped = self._stopped(r)
                if not stopped and len(r.out) < r.ask.budget:
                    r.todo = [token]
                    continue
                done = self._finish(r, stopped)
                r.turn += 1
                if self.progress is not None:
                    self.progress(1)
                nxt = drivers[r.driver].step(done)
                if nxt is None:
                    del rows[s]
                else:
                    self._start_turn(cache, s, r, nxt)
            # The batch has thinned out and nobody waits: shrink the cache to the live rows.
            if not pending and rows and len(rows) * 2 <= cache.rows:
                live = sorted(rows)
                cache.keep_rows(live)
                rows = {new: rows[old] for new, old in enumerate(live)}
        return self.stats


def default_cache_bytes(model) -> float:
    """Half the free accelerator memory, or a quarter of the machine's RAM on the CPU."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free * 0.5
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.25
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


__all__ = [
    "Ask",
    "Driver",
    "EngineStats",
    "Generated",
    "Sampling",
    "SessionEngine",
    "common_prefix",
]
