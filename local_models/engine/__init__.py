"""Session-aware generation: many multi-turn sessions on one local model, each keeping its
KV cache across turns, continuously batched.

Replaying sessions through a per-request API (``generate_until``, ``model.generate``)
wastes most of the machine: every turn re-prefills the whole history, a batch decodes
until its largest budget while finished sequences ride along, and every session waits
for the slowest one at each turn. This engine instead:

- keeps one slot of a KV cache per seated session: a turn prefills only the ids that
  differ from what the slot already holds (the longest common prefix of the new context
  and the cached ids is reused, so a template that re-tokenises earlier text differently
  still gets exactly the ids a per-request call would see);
- prefills a prefix shared by many sessions (system prompt, demonstrations) once and
  keeps its keys and values once: every query of a pass whose session starts with it
  attends to the one copy in one matmul, and that part is merged exactly with the
  query's attention over its own slot through the two parts' log-sum-exps, so a pass
  reads the prefix once, not once per session;
- lets a session leave the pass the moment its turn ends (EOS, stop string or budget)
  and gives it its next turn at once, or seats a waiting session when it is over:
  continuous batching across sessions, up to ``batch_size`` seated and within the KV
  memory bound (a session is seated only when its next turn fits; see
  :mod:`.scheduler`).

Sessions talk to the engine through one narrow hook, :class:`Driver`: ``step(None)``
returns the first turn, ``step(result)`` the next one (or None when the session is
over). The replay semantics (what a turn's context is, budget-0 turns, scoring) stay in
the drivers; the engine only generates.

Correctness: the text of a turn is the decode of exactly the ids it generated (at most
the budget), cut at the first stop string; ``cut`` is true iff the budget ran out before
the model stopped. Greedy outputs equal per-request generation token for token (up to
the floating-point noise of different batch shapes); sampled outputs are reproducible
from a seed, whatever the batch size, because each (session, turn) draws from its own
generator.

Modules, one noun each: :mod:`.interface` (the types drivers see), :mod:`.sampling`
(settings, sampler, stop handling), :mod:`.kv_cache` (slots, shared prefixes, the
bound), :mod:`.attention` (a pass's plan and the attention function),
:mod:`.runner` (the model's forward), :mod:`.scheduler` (:class:`SessionEngine`).

Glossary (one word per concept):

- **session**: one :class:`Driver`, a sequence of turns; numbered by its index in the
  drivers given to :meth:`SessionEngine.run`.
- **turn**: one :class:`Ask` answered by one :class:`Generated`.
- **slot**: one index along the first dimension of the cache's buffers; it holds the
  keys and values of one seated session.
- **seated** / **waiting**: a session with a slot (:class:`~.scheduler.Seat`) / a turn
  queued for one. **Admission** seats waiting turns; **eviction** frees the slot of a
  turn that no longer fits beside the others, to wait again.
- **position**: an index along a slot's second dimension; a session's token **index**
  (its rotary position) can differ, since a slot may hold holes and a shared prefix
  holds a session's first ids elsewhere.
- **extent**: the positions a slot uses, ``[0, end)``; the cache is as long as its
  furthest extent (its **capacity**).
- **shared prefix**: ids many sessions' first contexts begin with, prefilled once.
- **pass**: one packed forward; each seated session **feeds** it zero or more ids.
- **row** appears only in :attr:`EngineStats.max_rows`, the most sessions seated at once
  (the name logs and benchmarks read).
"""

from .interface import Ask, Driver, EngineStats, Generated, common_prefix
from .kv_cache import default_cache_bytes
from .sampling import Sampling, check_sampling_values, finished_text, stop_list, turn_seed
from .scheduler import SessionEngine

__all__ = [
    "Ask",
    "Driver",
    "EngineStats",
    "Generated",
    "Sampling",
    "SessionEngine",
    "check_sampling_values",
    "common_prefix",
    "default_cache_bytes",
    "finished_text",
    "stop_list",
    "turn_seed",
]
