"""The scheduler: which sessions sit in the cache, what each pass feeds, and what happens
when a turn ends. :meth:`SessionEngine.run` is one loop of four phases:

1. **admit**: seat waiting sessions, first come first served, while a slot is free and
   the KV bound allows their next turn beside the seated sessions' turns;
2. **schedule**: pick each seated session's feed for the pass (every decoding session's
   last token, prefill chunks up to ``prefill_tokens``);
3. **forward**: one packed pass (:class:`.runner.ModelRunner`);
4. **finish**: sample, end the turns that stopped, hand them to their drivers, and start
   the next turns in place (or evict a turn that no longer fits, to wait like a new one).

Admission reasons as vLLM's ``KVCacheManager.allocate_slots`` does: a session is seated
only when its whole turn (context and budget) fits beside the seated turns, so no pass
ever needs memory the bound refuses. A turn that outgrows the bound beside the others
gives up its slot and waits (as vLLM preempts by recomputation); only a turn that cannot
fit even alone is an error, naming the bound and ``max_cache_gb``."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .attention import Feed
from .interface import Ask, Driver, EngineStats, Generated, common_prefix
from .kv_cache import (
    COMPACT_SLACK,
    RAISE_BOUND,
    KvBound,
    SharedPrefix,
    SlotCache,
    best_prefix,
    default_cache_bytes,
    prefix_groups,
)
from .runner import ModelRunner
from .sampling import Sampler, Sampling, finished_text, stopped

GREEDY = Sampling()  # the default: greedy decoding


@dataclass
class Seat:
    """A session seated in a slot: what its slot holds and the turn it is generating."""

    session: int  # its index in the drivers
    ask: Ask
    turn: int = 0
    ids: list[int] = field(default_factory=list)  # the session's ids whose KV is cached
    positions: list[int] = field(default_factory=list)  # slot positions of ids[shared:]
    prefix: int = -1  # the shared prefix whose first ``shared`` ids begin ``ids`` (-1: none)
    shared: int = 0
    end: int = 0  # first never-written position of the slot
    todo: list[int] = field(default_factory=list)  # ids still to feed this turn
    out: list[int] = field(default_factory=list)  # ids generated this turn
    logprobs: list[float] = field(default_factory=list)
    generator: torch.Generator | None = None

    def extent(self) -> int:
        """The slot positions this turn can reach (exclusive): every id still to feed is
        written, then every generated id but the last is fed back."""
        return self.end + len(self.todo) + max(self.ask.budget - len(self.out) - 1, 0)


@dataclass(frozen=True)
class Waiting:
    """A session's turn that waits for a slot: its first turn, or a turn evicted because
    it did not fit beside the others."""

    session: int
    ask: Ask
    turn: int = 0


@dataclass
class _RunState:
    """One run: the drivers, the shared prefixes, the cache, the seated sessions by slot
    and the turns waiting for a slot."""

    drivers: Sequence[Driver]
    prefixes: list[SharedPrefix]
    cache: SlotCache
    seats: dict[int, Seat] = field(default_factory=dict)
    waiting: deque[Waiting] = field(default_factory=deque)

    def extent(self) -> int:
        return max((s.extent() for s in self.seats.values()), default=0)


class SessionEngine:
    """Generates every turn of many sessions on one causal LM (see the package docstring).

    ``model`` is any transformers causal LM that accepts ``past_key_values``, 4-D
    attention masks and ``position_ids`` (Llama, Qwen, Mistral, Gemma 3, …, and peft
    wrappers of them); ``decode`` turns ids into text (the evaluated tokenizer's);
    ``eos_ids`` end a turn. ``batch_size`` bounds the sessions seated together,
    ``max_cache_gb`` the KV cache (by default half the free accelerator memory, or a
    quarter of RAM), ``prefill_tokens`` the ids of one pass's prefill chunks."""

    def __init__(
        self,
        model,
        decode: Callable[[list[int]], str],
        *,
        eos_ids: Sequence[int] = (),
        batch_size: int = 32,
        sampling: Sampling = GREEDY,
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
        self.runner = ModelRunner(model, self.max_bytes)
        self.device = self.runner.device
        self.sampler = Sampler(sampling, self.device)
        self.stats = EngineStats()

    @torch.no_grad()
    def run(self, drivers: Sequence[Driver]) -> EngineStats:
        """Generate every turn of every session; results go back through the drivers."""
        first = self._first_turns(drivers)
        prefixes = self._prefill_prefixes([w.ask.context for w in first])
        state = _RunState(drivers, prefixes, SlotCache(0, self.device), waiting=deque(first))
        while state.waiting or state.seats:
            self._admit(state)
            feeds = self._schedule(state)
            if not feeds:
                continue
            logits = self._forward(state, feeds)
            self._finish(state, feeds, logits)
            self._thin_out(state)
        return self.stats

    # -- before the loop --------------------------------------------------------------------
    def _first_turns(self, drivers: Sequence[Driver]) -> list[Waiting]:
        first = []
        for i, d in enumerate(drivers):
            ask = d.step(None)
            if ask is not None:
                self._check_ask(ask, i)
                first.append(Waiting(i, ask))
        return first

    def _prefill_prefixes(self, contexts: list[list[int]]) -> list[SharedPrefix]:
        """Common prefixes of groups of first contexts, each prefilled once."""
        prefixes = []
        for ids in prefix_groups(contexts):
            passes = self.runner.passes
            prefixes.append(self.runner.prefill_prefix(ids, self.prefill_tokens))
            self.stats.forward_passes += self.runner.passes - passes
            self.stats.prefilled_tokens += len(ids)
        self.stats.shared_prefixes += len(prefixes)
        return prefixes

    def _check_ask(self, ask: Ask, session: int) -> None:
        if ask.budget < 1:
            raise ValueError(
                f"session {session}: a turn's budget must be at least 1, got {ask.budget}"
            )
        if not ask.context:
            raise ValueError(f"session {session}: a turn's context is empty")
        if self.max_length and len(ask.context) + ask.budget > self.max_length:
            raise ValueError(
                f"session {session} needs {len(ask.context)} context tokens + a budget of "
                f"{ask.budget}, over the model's max_length {self.max_length}; use fewer "
                "demonstrations (--num_fewshot) or a model with a longer context"
            )

    # -- 1. admit ---------------------------------------------------------------------------
    def _admit(self, state: _RunState) -> None:
        """Seat waiting turns, first come first served, while ``batch_size`` and the KV
        bound allow: the seated sessions' slots, all as long as the furthest any of their
        turns reaches, must fit. The first turn that does not fit waits (and those behind
        it: a long session is not starved by short ones); one that does not fit even
        alone is an error."""
        bound, extent = self.runner.bound(state.cache), state.extent()
        admitted: list[Seat] = []
        while state.waiting and len(state.seats) + len(admitted) < self.batch_size:
            seat = self._new_seat(state.waiting[0], state.prefixes)
            need = max(extent, seat.extent())
            if not bound.allows(len(state.seats) + len(admitted) + 1, need):
                if not state.seats and not admitted:
                    raise self._too_long(state.waiting[0], seat.extent(), bound)
                break
            state.waiting.popleft()
            admitted.append(seat)
            extent = need
        self._seat(state, admitted)
        self.stats.max_rows = max(self.stats.max_rows, len(state.seats))
        self._fit(state, bound)

    def _new_seat(self, waiting: Waiting, prefixes: Sequence[SharedPrefix]) -> Seat:
        """The seat a waiting turn would take: on the shared prefix its context begins
        with, feeding the rest of its context."""
        ask = waiting.ask
        prefix, shared = best_prefix(prefixes, ask.context)
        return Seat(
            session=waiting.session, ask=ask, turn=waiting.turn, ids=list(ask.context[:shared]),
            prefix=prefix, shared=shared, todo=list(ask.context[shared:]),
        )  # fmt: skip

    def _seat(self, state: _RunState, admitted: list[Seat]) -> None:
        """Put admitted seats in the lowest free slots, adding slots when none is free."""
        cache = state.cache
        missing = len(state.seats) + len(admitted) - cache.slots
        if missing > 0:
            cache.add_slots(missing)
        free = (slot for slot in range(cache.slots) if slot not in state.seats)
        for slot, seat in zip(free, admitted):
            cache.valid[slot] = False
            seat.generator = self.sampler.generator(seat.session, seat.turn)
            self.stats.reused_tokens += seat.shared
            self.stats.shared_prefix_sessions += seat.prefix >= 0
            state.seats[slot] = seat

    def _too_long(self, waiting: Waiting, extent: int, bound: KvBound) -> MemoryError:
        return MemoryError(
            f"session {waiting.session}'s turn {waiting.turn} needs {extent} tokens of KV "
            f"cache ({bound.bytes(1, extent) / 2**30:.3g} GiB) even alone, over the bound "
            f"of {bound.describe()}; {RAISE_BOUND}; by default it is half the free "
            "accelerator memory, or a quarter of RAM on the CPU"
        )

    def _fit(self, state: _RunState, bound: KvBound) -> None:
        """Keep the cache as it stands within the bound. Admission counts only seated
        slots, as long as their turns reach; when free slots or positions past every
        slot's end would pass the bound, they go."""
        cache = state.cache
        if bound.allows(cache.slots, max(cache.capacity, state.extent())):
            return
        self._keep_seated(state)
        cache.trim(max((s.end for s in state.seats.values()), default=0))

    def _keep_seated(self, state: _RunState) -> None:
        """Shrink the cache to the seated slots, renumbered from 0 in slot order."""
        live = sorted(state.seats)
        state.cache.keep_slots(live)
        state.seats = {new: state.seats[old] for new, old in enumerate(live)}

    # -- 2. schedule ------------------------------------------------------------------------
    def _schedule(self, state: _RunState) -> dict[int, list[int]]:
        """What each seated session feeds the next pass: every decoding session's last
        token, plus prefill chunks of sessions starting a turn (fewest ids to go first),
        up to ``prefill_tokens`` of them."""
        feeds: dict[int, list[int]] = {}
        room = self.prefill_tokens
        seats = state.seats
        for slot in sorted(seats, key=lambda s: len(seats[s].todo)):
            todo = seats[slot].todo
            if len(todo) == 1:
                feeds[slot] = list(todo)
            elif todo and room > 0:
                feeds[slot] = todo[: min(len(todo), room)]
                room -= len(feeds[slot])
        return feeds

    # -- 3. forward -------------------------------------------------------------------------
    def _forward(self, state: _RunState, feeds: dict[int, list[int]]) -> dict[int, torch.Tensor]:
        """One packed pass; the logits after each fed slot's last id. The seats' cache
        bookkeeping advances by what they fed."""
        seats = state.seats
        packed = [
            Feed(slot, feeds[slot], seats[slot].end, len(seats[slot].ids), seats[slot].prefix,
                 seats[slot].shared)
            for slot in sorted(feeds)
        ]  # fmt: skip
        seated_end = max(s.end for s in seats.values())
        began = time.perf_counter()
        logits = self.runner.forward(state.cache, packed, state.prefixes, seated_end)
        seconds = time.perf_counter() - began
        self.stats.forward_passes += 1
        for slot, feed in feeds.items():
            seat = seats[slot]
            seat.positions.extend(range(seat.end, seat.end + len(feed)))
            seat.ids.extend(feed)
            seat.end += len(feed)
            del seat.todo[: len(feed)]
        prefill = sum(len(f) for f in feeds.values() if len(f) > 1)
        self.stats.prefilled_tokens += prefill
        if prefill:
            self.stats.prefill_passes += 1
            self.stats.prefill_seconds += seconds
        else:
            self.stats.decode_seconds += seconds
        return {feed.slot: logits[i] for i, feed in enumerate(packed)}

    # -- 4. finish --------------------------------------------------------------------------
    def _finish(
        self, state: _RunState, feeds: dict[int, list[int]], logits: dict[int, torch.Tensor]
    ) -> None:
        """Sample the next id of every session whose feed is done; end the turns that
        stopped or ran out of budget and start their sessions' next turns."""
        ready = [slot for slot in feeds if not state.seats[slot].todo]
        if not ready:
            return
        seats = [state.seats[s] for s in ready]
        tokens, logps = self.sampler.choose(
            torch.stack([logits[s] for s in ready]), [seat.generator for seat in seats]
        )
        evicted: list[Waiting] = []
        for slot, seat, token, lp in zip(ready, seats, tokens, logps):
            seat.out.append(token)
            seat.logprobs.append(lp)
            self.stats.generated_tokens += 1
            ended = stopped(seat.out, seat.ask.stop, self.eos_ids, self.decode)
            if not ended and len(seat.out) < seat.ask.budget:
                seat.todo = [token]
                continue
            nxt = self._hand_back(state.drivers, seat, ended)
            if nxt is None:
                del state.seats[slot]
            elif not self._next_turn(state, slot, nxt):
                evicted.append(Waiting(seat.session, nxt, seat.turn))
        state.waiting.extendleft(reversed(evicted))

    def _hand_back(self, drivers: Sequence[Driver], seat: Seat, ended: bool) -> Ask | None:
        """Give the driver its finished turn; its next turn, or None when it is over."""
        ids = list(seat.out)
        eos = bool(ids) and ids[-1] in self.eos_ids
        text = finished_text(self.decode, ids, eos, seat.ask.stop)
        done = Generated(ids, text, cut=not ended, logprobs=list(seat.logprobs), eos=eos)
        seat.turn += 1
        if self.progress is not None:
            self.progress(1)
        return drivers[seat.session].step(done)

    def _next_turn(self, state: _RunState, slot: int, ask: Ask) -> bool:
        """Start ``ask`` in place, reusing the longest prefix the slot already holds; when
        it does not fit beside the other seated turns, free the slot instead (False): the
        turn waits and is prefilled afresh when seated again."""
        self._check_ask(ask, state.seats[slot].session)
        kept = self._start_turn(state.cache, slot, state.seats[slot], ask)
        if self.runner.bound(state.cache).allows(len(state.seats), state.extent()):
            self.stats.reused_tokens += kept
            return True
        del state.seats[slot]
        self.stats.evictions += 1
        return False

    def _start_turn(self, cache: SlotCache, slot: int, seat: Seat, ask: Ask) -> int:
        """Point ``seat`` at its next turn: the ids it holds past the longest common prefix
        of its cache and the new context leave the slot, and the rest is fed. Returns how
        many context ids the slot (with its shared prefix) already held."""
        keep = min(common_prefix(seat.ids, ask.context), len(ask.context) - 1)
        if keep < len(seat.ids):
            own = max(keep - seat.shared, 0)  # ids past the shared prefix that stay
            cache.invalidate(slot, seat.positions[own:])
            del seat.ids[keep:], seat.positions[own:]
            seat.shared = min(seat.shared, keep)
        if seat.end > 2 * len(seat.positions) + COMPACT_SLACK:  # too many holes: compact
            cache.compact(slot, seat.positions)
            seat.positions, seat.end = list(range(len(seat.positions))), len(seat.positions)
        seat.ask, seat.todo, seat.out, seat.logprobs = ask, list(ask.context[keep:]), [], []
        seat.generator = self.sampler.generator(seat.session, seat.turn)
        return keep

    # -- between passes ---------------------------------------------------------------------
    def _thin_out(self, state: _RunState) -> None:
        """The batch has thinned out and nobody waits: shrink the cache to the seated
        slots (the decode path reads every slot)."""
        if not state.waiting and state.seats and len(state.seats) * 2 <= state.cache.slots:
            self._keep_seated(state)
