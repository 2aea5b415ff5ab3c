"""Attention for a packed pass: what a pass feeds (:class:`Feed`), its plan (:func:`plan_pass`
gives a :class:`Pass`: packed ids, where each token is written, and the masks), and the
attention function the model runs under it (:func:`packed_attention`, installed for one
pass by :class:`session_attention`).

A pass packs every fed session's new ids side by side in one sequence. Each query attends
to two parts, softmaxed separately and merged exactly by their log-sum-exps: its own slot
of the slot buffers, and (for sessions that begin with a shared prefix) that prefix's one
copy. Queries of sessions with one new id (decoding) attend to their own slots in one
batched matmul; sessions with several (a turn's prefill) one at a time. The prefix part is
one matmul per prefix for every query of the pass that uses it, decoding and prefilling
alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .kv_cache import KvBound, SharedPrefix, SlotCache

ATTENTION = "interrupt_bench_session"


@dataclass(frozen=True)
class Feed:
    """What one seated session gives a pass: ``ids`` to feed, written to its slot from
    position ``end`` on (its first never-written position), the token index in its
    session of ``ids[0]``, and the shared prefix whose first ``shared`` ids begin the
    session (``prefix`` -1: none)."""

    slot: int
    ids: list[int]
    end: int
    index: int
    prefix: int = -1
    shared: int = 0


@dataclass
class Pass:
    """One packed forward pass as the attention reads it. Masks are built once per pass
    and shared by all layers; ``full`` and ``sliding`` are the marker tensors the model
    hands back as ``attention_mask`` for each layer type."""

    single_idx: torch.Tensor  # packed index of each computed one-token query
    single_slots: torch.Tensor | None  # their slots, or None: one query per slot, in order
    single_take: torch.Tensor | None  # which computed queries are real (None: all)
    single_out: torch.Tensor  # packed indices the real ones go to
    single_masks: dict[str, torch.Tensor]  # kind -> [n, 1, 1, live] additive
    segments: list[tuple[int, int, int, dict[str, torch.Tensor]]]  # slot, start, width, masks
    live: int  # one-token queries read cache positions [0, live): none is valid past it
    full: torch.Tensor
    sliding: torch.Tensor
    # The shared prefixes, and per prefix in use: the packed indices of the queries that
    # attend to it (None: all of them) and their additive masks over it ([m, P]).
    prefixes: Sequence[SharedPrefix] = ()
    prefix_groups: list[tuple[int, torch.Tensor | None, dict[str, torch.Tensor | None]]] = field(
        default_factory=list
    )


@dataclass
class Packed:
    """A pass's inputs: the packed ids, their token indices (rotary positions), the packed
    index of each feed's last id (whose logits are kept), where each id is written
    (``slot_of``, ``position_of``), and the attention's plan."""

    ids: list[int]
    rope: list[int]
    last: list[int]
    slot_of: torch.Tensor
    position_of: torch.Tensor
    plan: Pass


def additive(allowed: torch.Tensor) -> torch.Tensor:
    """A boolean mask as one to add to scores: 0 where allowed, the float32 minimum
    elsewhere."""
    mask = torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(torch.float32).min)


@dataclass
class _Layout:
    """Feeds laid side by side, before any tensor is built."""

    ids: list[int] = field(default_factory=list)
    slot_of: list[int] = field(default_factory=list)
    position_of: list[int] = field(default_factory=list)
    rope: list[int] = field(default_factory=list)
    last: list[int] = field(default_factory=list)
    singles: list[int] = field(default_factory=list)  # slots fed one id
    single_idx: list[int] = field(default_factory=list)  # packed index of that id
    segments: list[tuple[int, int, int]] = field(default_factory=list)  # slot, start, width
    starts: list[int] = field(default_factory=list)  # packed index of each feed's first id


def _lay_out(feeds: Sequence[Feed]) -> _Layout:
    out = _Layout()
    for feed in feeds:
        n, start = len(feed.ids), len(out.ids)
        out.starts.append(start)
        out.ids.extend(feed.ids)
        out.slot_of.extend([feed.slot] * n)
        out.position_of.extend(range(feed.end, feed.end + n))
        out.rope.extend(range(feed.index, feed.index + n))
        out.last.append(start + n - 1)
        if n == 1:
            out.singles.append(feed.slot)
            out.single_idx.append(start)
        else:
            out.segments.append((feed.slot, start, n))
    return out


def plan_pass(
    cache: SlotCache,
    feeds: Sequence[Feed],
    prefixes: Sequence[SharedPrefix],
    *,
    seated_end: int,
    bound: KvBound,
    sliced: bool,
    window: int | None,
) -> Packed:
    """Pack ``feeds`` (in slot order) into one pass over ``cache``: grow the cache to hold
    them, mark their positions live, and build every mask the attention needs.

    ``seated_end`` is the furthest end of any seated slot before the pass; ``bound`` the
    KV bound the cache grows within; ``sliced``
    says the attention may read only the live extent of the buffers (float32 matmuls read
    a strided slice as fast as the whole buffer; bf16 ones ran ~8x slower on a slice on a
    Xeon with oneDNN, so they read the whole, contiguous buffer and mask the tail);
    ``window`` is the sliding-window layers' window (None: the model has none)."""
    lay = _lay_out(feeds)
    cache.ensure_capacity(max(lay.position_of) + 1, bound)
    dev = cache.device
    slot_of = torch.tensor(lay.slot_of, device=dev)
    position_of = torch.tensor(lay.position_of, device=dev)
    rope = torch.tensor(lay.rope, device=dev)
    cache.valid[slot_of, position_of] = True  # each token sees itself and earlier ones
    cache.rope[slot_of, position_of] = rope
    # Every valid position of a slot lies before its end (after this pass's writes).
    live = max(max(lay.position_of) + 1, seated_end) if sliced else cache.capacity
    plan = Pass(
        **_single_queries(cache, lay, rope, live, window),
        segments=_segment_masks(cache, feeds, lay, position_of, rope, live, sliced, window),
        live=live,
        full=torch.zeros(1, 1, 1, 1, device=dev),
        sliding=torch.zeros(1, 1, 1, 1, device=dev),
        prefixes=prefixes,
        prefix_groups=_prefix_groups(feeds, lay, prefixes, rope, window),
    )
    return Packed(lay.ids, lay.rope, lay.last, slot_of, position_of, plan)


def _single_queries(
    cache: SlotCache, lay: _Layout, rope: torch.Tensor, live: int, window: int | None
) -> dict:
    """Where the one-token queries come from and go to, and their masks. When at least
    half the slots decode, every slot computes one query (a dummy one, discarded, where
    it has none) so that the keys are read in place, without copies."""
    dev = cache.device
    everyone = len(lay.singles) * 2 >= cache.slots
    slots = list(range(cache.slots)) if everyone else lay.singles
    q_rope = torch.zeros(len(slots), dtype=torch.long, device=dev)
    at = {s: i for i, s in enumerate(slots)}
    if lay.singles:
        q_rope[[at[s] for s in lay.singles]] = rope[lay.single_idx]
    allowed = cache.valid[slots, :live]
    masks = {"full": additive(allowed)[:, None, None]}
    if window is not None:
        near = (q_rope[:, None] - cache.rope[slots, :live]) < window
        masks["sliding"] = additive(allowed & near)[:, None, None]
    single_idx = torch.tensor(lay.single_idx, dtype=torch.long, device=dev)
    singles = torch.tensor(lay.singles, dtype=torch.long, device=dev)
    if not everyone:
        query_idx, single_slots, take = single_idx, singles, None
    else:
        query_idx = torch.zeros(cache.slots, dtype=torch.long, device=dev)
        query_idx[lay.singles] = single_idx
        single_slots = None
        take = singles if len(lay.singles) < cache.slots else None
    return {
        "single_idx": query_idx,
        "single_slots": single_slots,
        "single_take": take,
        "single_out": single_idx,
        "single_masks": masks,
    }


def _segment_masks(
    cache: SlotCache,
    feeds: Sequence[Feed],
    lay: _Layout,
    position_of: torch.Tensor,
    rope: torch.Tensor,
    live: int,
    sliced: bool,
    window: int | None,
) -> list[tuple[int, int, int, dict[str, torch.Tensor]]]:
    """Causal masks of the feeds of several ids, each over its slot's extent after the
    pass (or over ``live`` positions when the buffers are read whole)."""
    end = {feed.slot: feed.end for feed in feeds}
    k = torch.arange(live, device=cache.device)
    plans = []
    for slot, start, n in lay.segments:
        w = position_of[start : start + n]
        extent = end[slot] + n if sliced else live
        allowed = cache.valid[slot, :extent][None, :] & (k[None, :extent] <= w[:, None])
        masks = {"full": additive(allowed)}
        if window is not None:
            q_pos = rope[start : start + n, None]
            near = (q_pos - cache.rope[slot, :extent][None, :]) < window
            masks["sliding"] = additive(allowed & near)
        plans.append((slot, start, n, masks))
    return plans


def _prefix_groups(
    feeds: Sequence[Feed],
    lay: _Layout,
    prefixes: Sequence[SharedPrefix],
    rope: torch.Tensor,
    window: int | None,
) -> list[tuple[int, torch.Tensor | None, dict[str, torch.Tensor | None]]]:
    """Per shared prefix in use: the queries of sessions that begin with it attend to its
    first ``shared`` positions (token index = position there)."""
    users: dict[int, tuple[list[int], list[int]]] = {}  # prefix -> (queries, shared)
    for feed, start in zip(feeds, lay.starts):
        if feed.prefix >= 0 and feed.shared:
            queries, shared = users.setdefault(feed.prefix, ([], []))
            queries.extend(range(start, start + len(feed.ids)))
            shared.extend([feed.shared] * len(feed.ids))
    dev = rope.device
    groups = []
    for p, (queries, shared) in users.items():
        j = torch.arange(len(prefixes[p].ids), device=dev)
        ok = j[None, :] < torch.tensor(shared, device=dev)[:, None]
        # None: every query sees the whole prefix (no mask to add).
        whole = min(shared) >= len(prefixes[p].ids)
        masks = {"full": None if whole else additive(ok)}
        if window is not None:
            near = (rope[queries][:, None] - j[None, :]) < window
            masks["sliding"] = additive(ok & near)
        every = len(queries) == len(lay.ids)  # in packed order: all of them
        groups.append((p, None if every else torch.tensor(queries, device=dev), masks))
    return groups


_CURRENT: list[Pass] = []  # the pass in flight (the attention function reads it)


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
    heads, total, dim = query.shape[1:]
    heads_of = _Heads(heads, key.shape[1], dim, scaling if scaling is not None else dim**-0.5)
    q = query[0].transpose(0, 1)  # [T, heads, dim]
    merge = bool(plan.prefix_groups)
    out = query.new_empty(total, heads, dim, dtype=torch.float32)  # own-slot part
    lse = query.new_empty(total, heads, dtype=torch.float32) if merge else None
    if plan.single_idx.numel():
        _attend_singles(plan, kind, heads_of, q, key, value, out, lse)
    for slot, start, width, masks in plan.segments:
        _attend_segment(heads_of, q, key, value, slot, start, width, masks[kind], out, lse)
    for p, idx, masks in plan.prefix_groups:
        prefix = plan.prefixes[p]
        keys, values = prefix.keys[module.layer_idx], prefix.values[module.layer_idx]
        out = _merge_prefix(heads_of, q, keys, values, idx, masks[kind], out, lse)
    return out.to(query.dtype)[None], None


@dataclass(frozen=True)
class _Heads:
    """Query heads, key-value heads, head size and score scale of one layer."""

    heads: int
    kv_heads: int
    dim: int
    scale: float

    @property
    def groups(self) -> int:
        return self.heads // self.kv_heads


def _attend_singles(plan: Pass, kind: str, h: _Heads, q, key, value, out, lse) -> None:
    """The one-token queries against their own slots, in one batched matmul."""
    # Only the live extent of the buffers: capacity grows in steps, and reading the
    # unwritten tail was over half of the attention's time on SmolLM2.
    key_live, value_live = key[:, :, : plan.live], value[:, :, : plan.live]
    qs = q[plan.single_idx]
    if plan.single_slots is None:  # every slot has exactly one query: no copies
        ks, vs = key_live, value_live
    else:
        ks, vs = key_live[plan.single_slots], value_live[plan.single_slots]
    n = qs.shape[0]
    qs = qs.view(n, h.kv_heads, h.groups, h.dim)
    scores = torch.matmul(qs, ks.transpose(-1, -2)).float()
    probs, part_lse = _softmax(scores, h.scale, plan.single_masks[kind], lse is not None)
    res = torch.matmul(probs.to(vs.dtype), vs).reshape(n, h.heads, h.dim)
    take = plan.single_take
    out[plan.single_out] = (res if take is None else res[take]).float()
    if lse is not None:
        part_lse = part_lse.reshape(n, h.heads)
        lse[plan.single_out] = part_lse if take is None else part_lse[take]


def _attend_segment(h: _Heads, q, key, value, slot, start, width, mask, out, lse) -> None:
    """The ``width`` queries of one prefilling session against its own slot."""
    qs = q[start : start + width].transpose(0, 1).reshape(h.kv_heads, h.groups * width, h.dim)
    live = mask.shape[-1]  # the slot's positions up to its last new token
    kslot, vslot = key[slot, :, :live], value[slot, :, :live]
    scores = torch.matmul(qs, kslot.transpose(-1, -2)).float()
    scores = scores.view(h.kv_heads, h.groups, width, -1)
    probs, part_lse = _softmax(scores, h.scale, mask, lse is not None)
    res = torch.matmul(probs.view(h.kv_heads, h.groups * width, -1).to(vslot.dtype), vslot)
    out[start : start + width] = res.view(h.heads, width, h.dim).transpose(0, 1)
    if lse is not None:
        lse[start : start + width] = part_lse.view(h.heads, width).transpose(0, 1)


def _merge_prefix(h: _Heads, q, pk, pv, idx, mask, out, lse) -> torch.Tensor:
    """The queries ``idx`` (None: all) against a shared prefix's keys and values
    (``[kv_heads, P, dim]``), merged into their own-slot part by the two log-sum-exps."""
    qp = q if idx is None else q[idx]
    m = qp.shape[0]
    qp = qp.transpose(0, 1).reshape(h.kv_heads, h.groups * m, h.dim)  # query heads grouped
    scores = torch.matmul(qp, pk.transpose(-1, -2)).float().view(h.kv_heads, h.groups, m, -1)
    probs, part_lse = _softmax(scores, h.scale, mask, True)
    res = torch.matmul(probs.view(h.kv_heads, h.groups * m, -1).to(pv.dtype), pv)
    res = res.view(h.heads, m, h.dim).transpose(0, 1)
    part_lse = part_lse.view(h.heads, m).transpose(0, 1)
    own, own_lse = (out, lse) if idx is None else (out[idx], lse[idx])
    both = torch.logaddexp(own_lse, part_lse)
    merged = own * torch.exp(own_lse - both)[..., None]
    merged += res.float() * torch.exp(part_lse - both)[..., None]
    if idx is None:
        return merged
    out[idx] = merged
    return out


class session_attention:
    """Run the model's attention through :func:`packed_attention` for one pass, then put
    its own implementation back (lm-eval keeps using the model afterwards)."""

    def __init__(self, model, plan: Pass):
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
