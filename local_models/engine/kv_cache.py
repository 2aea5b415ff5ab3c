"""Where keys and values live: one slot per seated session in :class:`SlotCache`, one copy
of each shared prefix in :class:`SharedPrefix`, and the memory bound both answer to
(:class:`KvBound`).

The slot buffers are rectangular, ``[slots, kv_heads, capacity, head_dim]`` per layer: the
decode path attends over one slot per query in one batched matmul, which needs every slot
at the same stride. So the memory a set of seated sessions takes is ``slots x capacity``
positions, the capacity being the furthest position any of them reaches; admission
(:mod:`.scheduler`) reasons in exactly those terms."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .interface import common_prefix

# Capacity grows in steps of this many positions (and starts at one step): the decode path
# attends over the whole buffer, which stays contiguous only when growth copies it, so
# growth is rare and coarse.
GROW_STEP = 256
INITIAL_CAPACITY = GROW_STEP
# A slot is compacted (its live positions moved to its start) once its end passes twice
# its live positions plus this many: holes are reclaimed only when they are worth a copy.
COMPACT_SLACK = 256
# Shorter common prefixes of first contexts are not worth a copy of their own.
MIN_SHARED_PREFIX = 16  # tokens
# How a bound too small for a run is raised, named in every error that hits it.
RAISE_BOUND = (
    "raise max_cache_gb (SessionEngine's argument; lm-eval: --metadata '{\"max_cache_gb\": GIB}')"
)


@dataclass(frozen=True)
class KvBound:
    """The most bytes the slot cache may take, and what one position of one slot costs
    (keys and values of every layer)."""

    max_bytes: float
    bytes_per_token: int

    def bytes(self, slots: int, positions: int) -> int:
        return self.bytes_per_token * slots * positions

    def allows(self, slots: int, positions: int) -> bool:
        """Whether ``slots`` slots of ``positions`` positions each stay within the bound."""
        return self.bytes(slots, positions) <= self.max_bytes

    def describe(self) -> str:
        return f"{self.max_bytes / 2**30:.3g} GiB"


def default_cache_bytes(model) -> float:
    """Half the free accelerator memory, or a quarter of the machine's RAM on the CPU."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free * 0.5
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.25
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def estimated_bytes_per_token(model) -> int:
    """Bytes of keys and values one token takes across the model's layers, from its
    config, before any buffer exists (admission needs it before the first pass). Each
    element is counted at the wider of the weights' dtype and the autocast dtype, so the
    estimate is never below what the buffers take (under autocast, rotary embeddings leave
    keys in float32 while values follow autocast). 0 when the config does not say."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    if not layers or not heads:
        return 0
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    param = next(model.parameters())
    size = param.element_size()
    if torch.is_autocast_enabled(param.device.type):
        autocast = torch.get_autocast_dtype(param.device.type)
        size = max(size, torch.empty((), dtype=autocast).element_size())
    return layers * kv_heads * head_dim * 2 * size


@dataclass
class SharedPrefix:
    """A prefix many sessions share, prefilled once: per layer ``[kv_heads, P, dim]``."""

    ids: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


def prefix_groups(contexts: Sequence[Sequence[int]]) -> list[list[int]]:
    """The common prefixes worth sharing among first contexts: contexts sorted, runs of
    neighbours that share at least half of the run's common part (and at least
    ``MIN_SHARED_PREFIX`` ids) grouped, and each group of two or more reduced to the ids
    all its members begin with."""
    groups: list[list[int]] = []
    ordered = sorted(range(len(contexts)), key=lambda i: contexts[i])
    best: Sequence[int] | None = None
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
        ids = list(contexts[group[0]])
        for i in group[1:]:
            ids = ids[: common_prefix(ids, contexts[i])]
        if len(ids) >= MIN_SHARED_PREFIX:
            prefixes.append(ids)
    return prefixes


def best_prefix(prefixes: Sequence[SharedPrefix], context: Sequence[int]) -> tuple[int, int]:
    """The shared prefix a session with this first context sits on, and how many of its
    ids the session uses (at most all but the context's last id, which the turn feeds to
    get its first logits); ``(-1, 0)`` when none is long enough."""
    best, n = -1, 0
    for i, p in enumerate(prefixes):
        k = min(common_prefix(p.ids, context), len(context) - 1)
        if k > n:
            best, n = i, k
    if best >= 0 and n >= MIN_SHARED_PREFIX:
        return best, n
    return -1, 0


class SlotCache:
    """Keys and values of seated sessions, one slot each, as ``[slots, kv_heads, capacity,
    head_dim]`` buffers per layer (allocated on the first forward pass, grown in steps).
    Which positions of a slot hold live tokens is ``valid``; ``rope`` holds each position's
    token index in its session. The model sees it as a transformers ``Cache`` through
    :meth:`as_hf_cache`, which is told where the pass writes."""

    def __init__(self, slots: int, device: torch.device, capacity: int = INITIAL_CAPACITY):
        self.slots, self.device, self.capacity = slots, device, capacity
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.valid = torch.zeros(slots, capacity, dtype=torch.bool, device=device)
        self.rope = torch.zeros(slots, capacity, dtype=torch.long, device=device)

    def bytes_per_token(self) -> int:
        """What one position of one slot takes, once the buffers exist (0 before)."""
        if not self.keys:
            return 0
        k, v = self.keys[0], self.values[0]
        return len(self.keys) * k.shape[1] * k.shape[3] * (k.element_size() + v.element_size())

    def ensure_capacity(self, needed: int, bound: KvBound) -> None:
        """Room for positions ``[0, needed)`` in every slot. ``bound`` prices a position
        even before the buffers exist (the first pass allocates them at this capacity)."""
        if needed <= self.capacity:
            return
        # Grow by a quarter (at least GROW_STEP): the decode path attends over the whole
        # buffer, which keeps it contiguous (strided bf16 matmuls are ~8x slower on CPU).
        new = -(-max(needed, self.capacity + max(GROW_STEP, self.capacity // 4)) // GROW_STEP)
        new *= GROW_STEP
        per_token = max(bound.bytes_per_token, self.bytes_per_token())
        if per_token * self.slots * new > bound.max_bytes:
            new = needed  # grow only as far as needed once near the bound
        self.check(bound.max_bytes, new)
        self._resize_positions(new)

    def trim(self, capacity: int) -> None:
        """Drop positions from ``capacity`` on (none of them may be live): the memory goes
        to more slots."""
        if capacity < self.capacity:
            self._resize_positions(capacity)

    def _resize_positions(self, new: int) -> None:
        pad = new - self.capacity  # negative: cut
        self.keys = [torch.nn.functional.pad(k, (0, 0, 0, pad)) for k in self.keys]
        self.values = [torch.nn.functional.pad(v, (0, 0, 0, pad)) for v in self.values]
        self.valid = torch.nn.functional.pad(self.valid, (0, pad))
        self.rope = torch.nn.functional.pad(self.rope, (0, pad))
        self.capacity = new

    def check(self, max_bytes: float, capacity: int | None = None) -> None:
        """Refuse a cache over ``max_bytes``, naming what would fix it. Admission keeps the
        slot cache within the bound, so this fires only for a shared prefix too long for
        it."""
        capacity = capacity or self.capacity
        need = self.bytes_per_token() * self.slots * capacity
        if need > max_bytes:
            raise MemoryError(
                f"the KV cache would need {need / 2**30:.3g} GiB for {self.slots} slots of "
                f"{capacity} tokens, over the bound of {max_bytes / 2**30:.3g} GiB; "
                f"{RAISE_BOUND}"
            )

    def add_slots(self, n: int) -> None:
        """``n`` more (empty) slots at the end: more sessions are seated."""
        self.keys = [torch.nn.functional.pad(k, (0, 0, 0, 0, 0, 0, 0, n)) for k in self.keys]
        self.values = [torch.nn.functional.pad(v, (0, 0, 0, 0, 0, 0, 0, n)) for v in self.values]
        self.valid = torch.nn.functional.pad(self.valid, (0, 0, 0, n))
        self.rope = torch.nn.functional.pad(self.rope, (0, 0, 0, n))
        self.slots += n

    def keep_slots(self, slots: list[int]) -> None:
        """Shrink to the given slots (in that order; they are renumbered from 0)."""
        idx = torch.tensor(slots, dtype=torch.long, device=self.device)
        self.keys = [k.index_select(0, idx) for k in self.keys]
        self.values = [v.index_select(0, idx) for v in self.values]
        self.valid, self.rope = self.valid[idx], self.rope[idx]
        self.slots = len(slots)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, slot_of, position_of):
        """Write a packed pass's keys and values (``[1, heads, tokens, dim]``), token i at
        (``slot_of[i]``, ``position_of[i]``); return the whole buffers (contiguous: the
        attention masks what is not live)."""
        if layer == len(self.keys):  # first forward: allocate this layer's buffers
            self._allocate(k, v)
        kb, vb = self.keys[layer], self.values[layer]
        kb[slot_of, :, position_of] = k[0].transpose(0, 1).to(kb.dtype)
        vb[slot_of, :, position_of] = v[0].transpose(0, 1).to(vb.dtype)
        return kb, vb

    def _allocate(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """One layer's buffers, each in its own dtype (under autocast, rotary embeddings
        leave keys in float32 while values are bfloat16)."""
        shape = (self.slots, k.shape[1], self.capacity, k.shape[3])
        self.keys.append(torch.zeros(shape, dtype=k.dtype, device=k.device))
        self.values.append(torch.zeros(shape, dtype=v.dtype, device=v.device))

    def copy_out(self, slot: int, n: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The first ``n`` positions of ``slot``, per layer, as ``[heads, n, dim]``."""
        return (
            [k[slot, :, :n].contiguous() for k in self.keys],
            [v[slot, :, :n].contiguous() for v in self.values],
        )

    def invalidate(self, slot: int, positions: list[int]) -> None:
        """Positions of ``slot`` whose tokens left the session's context."""
        dead = torch.tensor(positions, dtype=torch.long, device=self.device)
        self.valid[slot, dead] = False

    def compact(self, slot: int, positions: list[int]) -> None:
        """Move a slot's live positions to its start, in order (reclaims holes)."""
        idx = torch.tensor(positions, dtype=torch.long, device=self.device)
        n = len(positions)
        for layer in range(len(self.keys)):
            self.keys[layer][slot, :, :n] = self.keys[layer][slot].index_select(1, idx)
            self.values[layer][slot, :, :n] = self.values[layer][slot].index_select(1, idx)
        rope = self.rope[slot].index_select(0, idx)
        self.valid[slot] = False
        self.valid[slot, :n] = True
        self.rope[slot, :n] = rope

    def as_hf_cache(self, slot_of: torch.Tensor, position_of: torch.Tensor):
        """This cache as the model's attention layers call it for one pass, whose packed
        token i goes to (``slot_of[i]``, ``position_of[i]``)."""
        from transformers.cache_utils import Cache

        cache = self

        class SlotCacheView(Cache):
            """``update`` writes this pass's keys and values where the pass puts them and
            returns the slots' whole buffers."""

            def __init__(self):
                super().__init__(layers=[])

            def update(self, key_states, value_states, layer_idx, *args, **kwargs):
                return cache.write(layer_idx, key_states, value_states, slot_of, position_of)

            def get_seq_length(self, layer_idx: int = 0) -> int:
                return cache.capacity

            @property
            def is_compileable(self) -> bool:
                return False

        return SlotCacheView()
