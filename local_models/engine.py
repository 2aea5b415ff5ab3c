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
  keeps its keys and values once: every query of a pass whose row starts with it
  attends to the one copy in one matmul, and that part is merged exactly with the
  query's attention over its own row through the two parts' log-sum-exps, so a pass
  reads the prefix once, not once per row;
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
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from interrupt_bench.errors import ConfigError


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
        honour, or a value it would have to guess at, is a ``ConfigError`` naming the fix,
        never silently dropped or reinterpreted.

        ``do_sample=True`` with ``temperature=0`` is refused: lm-eval's ``hf`` model passes
        it to ``model.generate``, which refuses it too (temperature 0 is greedy decoding,
        which ``do_sample=False`` asks for). ``do_sample=True`` with no temperature samples
        at 1, as ``model.generate`` does."""
        unknown = sorted(set(kwargs) - set(cls.KNOWN))
        if unknown:
            raise ConfigError(
                f"generation_kwargs {unknown} are not supported by the session engine "
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
    prefill_passes: int = 0  # passes that prefilled (decode rows ride along)
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0  # passes that only decoded
    max_rows: int = 0
    shared_prefix_sessions: int = 0  # sessions seated on a shared prefix (read once per pass)


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


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


# --------------------------------------------------------------------------------------
# The slot KV cache


GROW_STEP = 256  # tokens


class _SlotCache:
    """Keys and values of ``rows`` sessions, one row each, as ``[rows, heads, capacity,
    head_dim]`` buffers per layer (allocated on the first forward pass, grown in steps).
    Which positions of a row hold live tokens is ``valid``; ``rope`` holds each
    position's token index in its session. The model sees it as a transformers ``Cache``
    through :meth:`as_hf_cache`; :meth:`plan` says where the next forward writes."""

    def __init__(self, rows: int, device: torch.device, capacity: int = 256):
        self.rows, self.device, self.capacity = rows, device, capacity
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.valid = torch.zeros(rows, capacity, dtype=torch.bool, device=device)
        self.rope = torch.zeros(rows, capacity, dtype=torch.long, device=device)
        self._rows_idx: torch.Tensor | None = None  # [T] row of each packed token
        self._write: torch.Tensor | None = None  # [T] its cache position

    def bytes_per_token(self) -> int:
        if not self.keys:
            return 0
        k, v = self.keys[0], self.values[0]
        return len(self.keys) * k.shape[1] * k.shape[3] * (k.element_size() + v.element_size())

    def ensure_capacity(self, needed: int, max_bytes: float) -> None:
        if needed <= self.capacity:
            return
        # Grow by a quarter (at least GROW_STEP): the decode path attends over the whole
        # buffer, which keeps it contiguous (strided bf16 matmuls are ~8x slower on CPU).
        new = -(-max(needed, self.capacity + max(GROW_STEP, self.capacity // 4)) // GROW_STEP)
        new *= GROW_STEP
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

    def plan(self, rows: torch.Tensor, write: torch.Tensor) -> None:
        """The next forward pass writes packed token i at (``rows[i]``, ``write[i]``)."""
        self._rows_idx, self._write = rows, write

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write a packed pass's keys and values (``[1, heads, tokens, dim]``) into their
        rows; return the whole buffers (contiguous: the attention masks what is not
        live)."""
        if layer == len(self.keys):  # first forward: allocate this layer's buffers
            self._allocate(k, v)
        kb, vb = self.keys[layer], self.values[layer]
        kb[self._rows_idx, :, self._write] = k[0].transpose(0, 1).to(kb.dtype)
        vb[self._rows_idx, :, self._write] = v[0].transpose(0, 1).to(vb.dtype)
        return kb, vb

    def _allocate(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """One layer's buffers, each in its own dtype (under autocast, rotary embeddings
        leave keys in float32 while values are bfloat16)."""
        shape = (self.rows, k.shape[1], self.capacity, k.shape[3])
        self.keys.append(torch.zeros(shape, dtype=k.dtype, device=k.device))
        self.values.append(torch.zeros(shape, dtype=v.dtype, device=v.device))

    def copy_out(self, row: int, n: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The first ``n`` positions of ``row``, per layer, as ``[heads, n, dim]``."""
        return (
            [k[row, :, :n].contiguous() for k in self.keys],
            [v[row, :, :n].contiguous() for v in self.values],
        )

    def compact(self, row: int, positions: list[int]) -> None:
        """Move a row's live positions to its start, in order (reclaims holes)."""
        idx = torch.tensor(positions, dtype=torch.long, device=self.device)
        n = len(positions)
        for layer in range(len(self.keys)):
            self.keys[layer][row, :, :n] = self.keys[layer][row].index_select(1, idx)
            self.values[layer][row, :, :n] = self.values[layer][row].index_select(1, idx)
        rope = self.rope[row].index_select(0, idx)
        self.valid[row] = False
        self.valid[row, :n] = True
        self.rope[row, :n] = rope

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
                return slots.capacity

            @property
            def is_compileable(self) -> bool:
                return False

        return SlotCacheView()


# --------------------------------------------------------------------------------------
# Attention for short queries

ATTENTION = "interrupt_bench_session"


@dataclass
class _Pass:
    """One packed forward pass: every row's new tokens side by side in one sequence.

    Each query attends to two parts, softmaxed separately and merged exactly by their
    log-sum-exps: its own row of the slot buffers, and (for rows that begin with a shared
    prefix) that prefix's one copy. Rows with one new token (decoding) attend to their
    own rows in one batched matmul; rows with several (a turn's prefill) one at a time.
    The prefix part is one matmul per prefix for every query of the pass that uses it,
    decoding and prefilling alike. Masks are built once per pass and shared by all
    layers; ``full`` and ``sliding`` are the marker tensors the model hands back as
    ``attention_mask`` for each layer type."""

    single_idx: torch.Tensor  # packed index of each computed one-token query
    single_rows: torch.Tensor | None  # their slots, or None: one query per slot, in order
    single_take: torch.Tensor | None  # which computed queries are real (None: all)
    single_out: torch.Tensor  # packed indices the real ones go to
    single_masks: dict[str, torch.Tensor]  # kind -> [n, 1, 1, live] additive
    segments: list[tuple[int, int, int, dict[str, torch.Tensor]]]  # row, start, width, masks
    live: int  # one-token queries read cache positions [0, live): none is valid past it
    full: torch.Tensor
    sliding: torch.Tensor
    # The shared prefixes, and per prefix in use: the packed indices of the queries that
    # attend to it (None: all of them) and their additive masks over it ([m, P]).
    prefixes: list[_Prefix] = field(default_factory=list)
    prefix_groups: list[tuple[int, torch.Tensor | None, dict[str, torch.Tensor | None]]] = field(
        default_factory=list
    )


_CURRENT: list[_Pass] = []  # the pass in flight (the attention function reads it)


def _softmax(
    scores: torch.Tensor, scale: float, mask: torch.Tensor | None, with_lse: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``softmax(scores * scale + mask)`` over the last dimension (``scores`` is float32
    and is overwritten), and its log-sum-exp when the result will be merged with another
    part's. The log-sum-exp comes from the largest score and its probability (at least
    1/width, so well conditioned) instead of a second pass of exponentials."""
    scores.mul_(scale)
    if mask is not None:
        scores.add_(mask)
    probs = torch.softmax(scores, dim=-1)
    if not with_lse:
        return probs, None
    return probs, scores.amax(dim=-1) - probs.amax(dim=-1).log()


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                     **kwargs):  # fmt: skip
    """Attention of a packed pass against the slot buffers and shared prefixes, as
    batched matmuls.

    Grouped-query heads are matched without copying keys, scores and softmax are
    float32. (PyTorch's CPU SDPA kernel is tuned for long queries: at decode it spent
    ~20x longer than these matmuls, 300 ms vs 15 ms per step for SmolLM2 at 32 rows of
    600 tokens.)"""
    plan = _CURRENT[-1]
    kind = "sliding" if attention_mask is plan.sliding else "full"
    layer = module.layer_idx
    _, heads, total, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    q = query[0].transpose(0, 1)  # [T, heads, dim]
    merge = bool(plan.prefix_groups)
    out = query.new_empty(total, heads, dim, dtype=torch.float32)  # own-row part
    lse = query.new_empty(total, heads, dtype=torch.float32) if merge else None
    if plan.single_idx.numel():
        # Only the live extent of the buffers: capacity grows in steps, and reading the
        # unwritten tail was over half of the attention's time on SmolLM2.
        key_live, value_live = key[:, :, : plan.live], value[:, :, : plan.live]
        if plan.single_rows is None:  # every slot has exactly one query: no copies
            qs, ks, vs = q[plan.single_idx], key_live, value_live
        else:
            qs = q[plan.single_idx]
            ks, vs = key_live[plan.single_rows], value_live[plan.single_rows]
        n = qs.shape[0]
        qs = qs.view(n, kv_heads, groups, dim)
        scores = torch.matmul(qs, ks.transpose(-1, -2)).float()
        probs, part_lse = _softmax(scores, scale, plan.single_masks[kind], merge)
        res = torch.matmul(probs.to(vs.dtype), vs).reshape(n, heads, dim)
        take = plan.single_take
        out[plan.single_out] = (res if take is None else res[take]).float()
        if merge:
            part_lse = part_lse.reshape(n, heads)
            lse[plan.single_out] = part_lse if take is None else part_lse[take]
    for row, start, width, masks in plan.segments:
        qs = q[start : start + width].transpose(0, 1).reshape(kv_heads, groups * width, dim)
        live = masks[kind].shape[-1]  # this row's positions up to its last new token
        krow, vrow = key[row, :, :live], value[row, :, :live]
        scores = torch.matmul(qs, krow.transpose(-1, -2)).float()
        scores = scores.view(kv_heads, groups, width, -1)
        probs, part_lse = _softmax(scores, scale, masks[kind], merge)
        res = torch.matmul(probs.view(kv_heads, groups * width, -1).to(vrow.dtype), vrow)
        out[start : start + width] = res.view(heads, width, dim).transpose(0, 1)
        if merge:
            lse[start : start + width] = part_lse.view(heads, width).transpose(0, 1)
    for p, idx, masks in plan.prefix_groups:
        pk, pv = plan.prefixes[p].keys[layer], plan.prefixes[p].values[layer]  # [kv, P, dim]
        qp = q if idx is None else q[idx]
        m = qp.shape[0]
        qp = qp.transpose(0, 1).reshape(kv_heads, groups * m, dim)  # query heads grouped
        scores = torch.matmul(qp, pk.transpose(-1, -2)).float().view(kv_heads, groups, m, -1)
        probs, part_lse = _softmax(scores, scale, masks[kind], True)
        res = torch.matmul(probs.view(kv_heads, groups * m, -1).to(pv.dtype), pv)
        res = res.view(heads, m, dim).transpose(0, 1)
        part_lse = part_lse.view(heads, m).transpose(0, 1)
        own, own_lse = (out, lse) if idx is None else (out[idx], lse[idx])
        both = torch.logaddexp(own_lse, part_lse)
        merged = own * torch.exp(own_lse - both)[..., None]
        merged += res.float() * torch.exp(part_lse - both)[..., None]
        if idx is None:
            out = merged
        else:
            out[idx] = merged
    return out.to(query.dtype)[None], None


class session_attention:
    """Run the model's attention through :func:`packed_attention` for one pass, then put
    its own implementation back (lm-eval keeps using the model afterwards)."""

    def __init__(self, model, plan: _Pass):
        self.plan = plan
        self.configs = [
            m.config
            for m in model.modules()
            if hasattr(getattr(m, "config", None), "_attn_implementation")
        ]

    def __enter__(self):
        from transformers import AttentionInterface

        AttentionInterface.register(ATTENTION, packed_attention)
        self.saved = [c._attn_implementation for c in self.configs]
        for c in self.configs:
            c._attn_implementation = ATTENTION
        _CURRENT.append(self.plan)
        return self

    def __exit__(self, *exc):
        _CURRENT.pop()
        for c, saved in zip(self.configs, self.saved):
            c._attn_implementation = saved
        return False


# --------------------------------------------------------------------------------------
# Rows and the engine


@dataclass
class _Row:
    driver: int
    ask: Ask
    ids: list[int] = field(default_factory=list)  # the session's ids so far (cached)
    pos: list[int] = field(default_factory=list)  # cache positions of ids[shared:]
    prefix: int = -1  # the shared prefix whose first ``shared`` ids begin ``ids`` (-1: none)
    shared: int = 0
    todo: list[int] = field(default_factory=list)  # ids still to feed
    end: int = 0  # first never-written cache position
    out: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turn: int = 0
    generator: torch.Generator | None = None


@dataclass
class _Prefix:
    """A prefix many sessions share, prefilled once: per layer ``[kv_heads, P, dim]``."""

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
        prefill_tokens: int = 1024,
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
        if getattr(config, "attn_logit_softcapping", None) is not None:
            raise NotImplementedError(
                "the session engine does not apply attention logit soft-capping; use "
                "metadata turn_batching: exact for this model"
            )
        unknown = set(self.layer_types) - {"full_attention", "sliding_attention"}
        if unknown:
            raise NotImplementedError(
                "the session engine knows full and sliding-window attention, not "
                f"{sorted(unknown)}; use metadata turn_batching: exact for this model"
            )
        self.stats = EngineStats()
        self._prefixes: list[_Prefix] = []  # this run's shared prefixes

    # -- the forward pass ---------------------------------------------------------------
    def _additive(self, allowed: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(allowed.shape, dtype=torch.float32, device=self.device)
        return mask.masked_fill_(~allowed, torch.finfo(torch.float32).min)

    def _plan(self, cache: _SlotCache, feeds: dict[int, list[int]], states: dict[int, _Row]):
        """Packed ids, positions, write targets and masks of one pass."""
        ids, rows, write, rope, last = [], [], [], [], []
        singles, single_idx, segments = [], [], []
        starts: dict[int, int] = {}  # slot -> its first packed index
        prefixes = self._prefixes
        for slot in sorted(feeds):
            feed, state = feeds[slot], states[slot]
            n, start = len(feed), len(ids)
            starts[slot] = start
            ids.extend(feed)
            rows.extend([slot] * n)
            write.extend(range(state.end, state.end + n))
            rope.extend(range(len(state.ids), len(state.ids) + n))
            last.append(start + n - 1)
            if n == 1:
                singles.append(slot)
                single_idx.append(start)
            else:
                segments.append((slot, start, n))
        cache.ensure_capacity(max(write) + 1, self.max_bytes)
        dev = self.device
        t_rows = torch.tensor(rows, device=dev)
        t_write = torch.tensor(write, device=dev)
        t_rope = torch.tensor(rope, device=dev)
        cache.valid[t_rows, t_write] = True  # each token sees itself and earlier ones
        cache.rope[t_rows, t_write] = t_rope
        # Every valid position of a row lies before its end (after this pass's writes).
        # float32 matmuls read a strided slice of the buffers as fast as the whole buffer,
        # so attention reads only that extent; bf16 ones ran ~8x slower on a slice (Xeon,
        # oneDNN), so they read the whole, contiguous buffer and mask the tail.
        live = max(max(write) + 1, max((st.end for st in states.values()), default=0))
        sliced = self.dtype == torch.float32 and not torch.is_autocast_enabled(dev.type)
        if not sliced:
            live = cache.capacity
        k = torch.arange(live, device=dev)
        sliding = "sliding_attention" in self.layer_types
        # One-token rows: one query per slot when most slots have one (no key copies).
        everyone = len(singles) * 2 >= cache.rows
        single_rows = list(range(cache.rows)) if everyone else singles
        q_rope = torch.zeros(len(single_rows), dtype=torch.long, device=dev)
        pos = {s: i for i, s in enumerate(single_rows)}
        if singles:
            q_rope[[pos[s] for s in singles]] = t_rope[single_idx]
        allowed = cache.valid[single_rows, :live]
        single_masks = {"full": self._additive(allowed)[:, None, None]}
        if sliding:
            near = (q_rope[:, None] - cache.rope[single_rows, :live]) < self.window
            single_masks["sliding"] = self._additive(allowed & near)[:, None, None]
        seg_plans = []
        for slot, start, n in segments:
            w = t_write[start : start + n]
            row_live = states[slot].end + n if sliced else live  # its extent after the pass
            allowed = cache.valid[slot, :row_live][None, :] & (k[None, :row_live] <= w[:, None])
            masks = {"full": self._additive(allowed)}
            q_pos = t_rope[start : start + n, None]
            if sliding:
                near = (q_pos - cache.rope[slot, :row_live][None, :]) < self.window
                masks["sliding"] = self._additive(allowed & near)
            seg_plans.append((slot, start, n, masks))
        # Queries of rows that begin with a shared prefix also attend to its first
        # ``shared`` positions (token index = position there), one group per prefix.
        users: dict[int, tuple[list[int], list[int]]] = {}  # prefix -> (queries, shared)
        for slot, start in starts.items():
            row = states[slot]
            if row.prefix >= 0 and row.shared:
                queries, shared = users.setdefault(row.prefix, ([], []))
                queries.extend(range(start, start + len(feeds[slot])))
                shared.extend([row.shared] * len(feeds[slot]))
        prefix_groups = []
        for p, (queries, shared) in users.items():
            j = torch.arange(len(prefixes[p].ids), device=dev)
            ok = j[None, :] < torch.tensor(shared, device=dev)[:, None]
            # None: every query sees the whole prefix (no mask to add).
            whole = min(shared) >= len(prefixes[p].ids)
            pmasks = {"full": None if whole else self._additive(ok)}
            if sliding:
                near = (t_rope[queries][:, None] - j[None, :]) < self.window
                pmasks["sliding"] = self._additive(ok & near)
            every = len(queries) == len(ids)  # in packed order: all of them
            prefix_groups.append((p, None if every else torch.tensor(queries, device=dev), pmasks))
        t_single_idx = torch.tensor(single_idx, dtype=torch.long, device=dev)
        take = None
        if everyone:
            # Slots without a one-token row compute a dummy query (index 0), discarded.
            query_idx = torch.zeros(cache.rows, dtype=torch.long, device=dev)
            query_idx[singles] = t_single_idx
            rows_idx = None
            if len(singles) < cache.rows:
                take = torch.tensor(singles, dtype=torch.long, device=dev)
        else:
            query_idx, rows_idx = t_single_idx, torch.tensor(singles, dtype=torch.long, device=dev)
        plan = _Pass(
            single_idx=query_idx,
            single_rows=rows_idx,
            single_take=take,
            single_out=t_single_idx,
            single_masks=single_masks,
            segments=seg_plans,
            live=live,
            full=torch.zeros(1, 1, 1, 1, device=dev),
            sliding=torch.zeros(1, 1, 1, 1, device=dev),
            prefixes=prefixes,
            prefix_groups=prefix_groups,
        )
        cache.plan(t_rows, t_write)
        return ids, rope, last, plan

    def _forward(
        self, cache: _SlotCache, feeds: dict[int, list[int]], states: dict[int, _Row]
    ) -> dict[int, torch.Tensor]:
        """Feed ``feeds[slot]`` to each slot in one packed pass; the logits after each
        slot's last id."""
        ids, rope, last, plan = self._plan(cache, feeds, states)
        masks = (
            {"full_attention": plan.full, "sliding_attention": plan.sliding}
            if "sliding_attention" in self.layer_types
            else plan.full
        )
        with session_attention(self.model, plan):
            out = self.model(
                input_ids=torch.tensor([ids], device=self.device),
                attention_mask=masks,
                position_ids=torch.tensor([rope], device=self.device),
                past_key_values=cache.as_hf_cache(),
                use_cache=True,
                logits_to_keep=torch.tensor(last, device=self.device),
            )
        self.stats.forward_passes += 1
        cache.check(self.max_bytes)
        for slot, feed in feeds.items():
            state = states[slot]
            state.pos.extend(range(state.end, state.end + len(feed)))
            state.ids.extend(feed)
            state.end += len(feed)
        logits = out.logits[0].float()
        if not bool(torch.isfinite(logits).all()):
            raise FloatingPointError(
                "the model produced non-finite logits (diverged weights, or a dtype too "
                "narrow for this model: try dtype=float32)"
            )
        return {slot: logits[i] for i, slot in enumerate(sorted(feeds))}

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
        g = torch.Generator(device=self.device)
        g.manual_seed(turn_seed(self.sampling.seed, driver, turn))
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
        text = finished_text(self.decode, ids, eos, row.ask.stop)
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
            own = max(keep - row.shared, 0)  # ids past the shared prefix that stay
            dead = torch.tensor(row.pos[own:], dtype=torch.long, device=self.device)
            cache.valid[slot, dead] = False
            del row.ids[keep:], row.pos[own:]
            row.shared = min(row.shared, keep)
        if row.end > 2 * len(row.pos) + 256:  # too many holes: compact
            cache.compact(slot, row.pos)
            row.pos, row.end = list(range(len(row.pos))), len(row.pos)
        self.stats.reused_tokens += keep
        row.ask, row.todo, row.out, row.logprobs = ask, list(ask.context[keep:]), [], []
        row.generator = self._generator(row.driver, row.turn)

    def _seat(self, cache: _SlotCache, slot: int, driver: int, ask: Ask) -> _Row:
        """A new session in ``slot``, attending to the shared prefix it begins with."""
        cache.valid[slot] = False
        row = _Row(driver=driver, ask=ask)
        best, n = -1, 0
        for i, p in enumerate(self._prefixes):
            k = min(common_prefix(p.ids, ask.context), len(ask.context) - 1)
            if k > n:
                best, n = i, k
        if best >= 0 and n >= MIN_SHARED_PREFIX:
            row.prefix, row.shared, row.ids = best, n, list(ask.context[:n])
            self.stats.shared_prefix_sessions += 1
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
                self._forward(cache, {0: ids[start : start + self.prefill_tokens]}, {0: row})
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
        self._prefixes = []  # none while the prefixes themselves are prefilled
        self._prefixes = self._prefill_prefixes([a.context for a in first.values()])
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
                rows[slot] = self._seat(cache, slot, d, first.pop(d))
            self.stats.max_rows = max(self.stats.max_rows, len(rows))
            # One packed pass: every decoding row's last token, plus prefill chunks of
            # rows starting a turn, up to ``prefill_tokens`` of them.
            feeds: dict[int, list[int]] = {}
            room = self.prefill_tokens
            for slot in sorted(rows, key=lambda s: len(rows[s].todo)):
                todo = rows[slot].todo
                if len(todo) == 1:
                    feeds[slot] = list(todo)
                elif todo and room > 0:
                    feeds[slot] = todo[: min(len(todo), room)]
                    room -= len(feeds[slot])
            if not feeds:
                continue
            began = time.perf_counter()
            logits = self._forward(cache, feeds, rows)
            seconds = time.perf_counter() - began
            prefill = sum(len(f) for f in feeds.values() if len(f) > 1)
            self.stats.prefilled_tokens += prefill
            if prefill:
                self.stats.prefill_passes += 1
                self.stats.prefill_seconds += seconds
            else:
                self.stats.decode_seconds += seconds
            ready: list[tuple[int, torch.Tensor]] = []
            for slot, feed in feeds.items():
                del rows[slot].todo[: len(feed)]
                if not rows[slot].todo:
                    ready.append((slot, logits[slot]))
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
    "finished_text",
    "turn_seed",
]
