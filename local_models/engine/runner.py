"""The model side of a pass: :class:`ModelRunner` checks once that the engine's attention
can stand in for the model's, then runs packed passes over a :class:`SlotCache` and
prefills shared prefixes. It knows nothing of sessions or turns: it is given
:class:`Feed` s and returns logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .attention import Feed, plan_pass, session_attention
from .kv_cache import KvBound, SharedPrefix, SlotCache, estimated_bytes_per_token


class ModelRunner:
    """Runs packed forward passes of ``model`` (any transformers causal LM that accepts
    ``past_key_values``, 4-D attention masks and ``position_ids``)."""

    def __init__(self, model, max_bytes: float):
        self.model, self.max_bytes = model, max_bytes
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
        self.passes = 0  # forward passes run

    def bound(self, cache: SlotCache) -> KvBound:
        """The KV bound, pricing a position as ``cache``'s buffers take it once they exist
        (never below the config's estimate, which admission needs before they do; the
        estimate reads the autocast state, so it is taken when asked)."""
        per_token = max(estimated_bytes_per_token(self.model), cache.bytes_per_token())
        return KvBound(self.max_bytes, per_token)

    @property
    def sliding(self) -> bool:
        return "sliding_attention" in self.layer_types

    def forward(
        self,
        cache: SlotCache,
        feeds: Sequence[Feed],
        prefixes: Sequence[SharedPrefix],
        seated_end: int,
    ) -> torch.Tensor:
        """Feed every ``feeds[i].ids`` to its slot in one packed pass; the float32 logits
        after each feed's last id, ``[len(feeds), vocab]``. ``feeds`` are in slot order;
        ``seated_end`` is the furthest end of any seated slot."""
        sliced = self.dtype == torch.float32 and not torch.is_autocast_enabled(self.device.type)
        packed = plan_pass(
            cache, feeds, prefixes, seated_end=seated_end, bound=self.bound(cache),
            sliced=sliced, window=self.window if self.sliding else None,
        )  # fmt: skip
        plan = packed.plan
        masks = (
            {"full_attention": plan.full, "sliding_attention": plan.sliding}
            if self.sliding
            else plan.full
        )
        with session_attention(self.model, plan):
            out = self.model(
                input_ids=torch.tensor([packed.ids], device=self.device),
                attention_mask=masks,
                position_ids=torch.tensor([packed.rope], device=self.device),
                past_key_values=cache.as_hf_cache(packed.slot_of, packed.position_of),
                use_cache=True,
                logits_to_keep=torch.tensor(packed.last, device=self.device),
            )
        self.passes += 1
        cache.check(self.max_bytes)
        logits = out.logits[0].float()
        if not bool(torch.isfinite(logits).all()):
            raise FloatingPointError(
                "the model produced non-finite logits (diverged weights, or a dtype too "
                "narrow for this model: try dtype=float32)"
            )
        return logits

    def prefill_prefix(self, ids: list[int], chunk: int) -> SharedPrefix:
        """Keys and values of ``ids``, prefilled ``chunk`` ids a pass into a cache of
        their own and copied out once."""
        cache = SlotCache(1, self.device, capacity=len(ids) + 1)
        for start in range(0, len(ids), chunk):
            feed = Feed(slot=0, ids=ids[start : start + chunk], end=start, index=start)
            self.forward(cache, [feed], (), seated_end=start)
        keys, values = cache.copy_out(0, len(ids))
        return SharedPrefix(ids, keys, values)
