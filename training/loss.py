"""The REINFORCE loss on the tokens the model sampled.

Sessions (``training.rollouts.SessionTokens``) become right-padded micro-batches
(:func:`batch_tensors`); the prefix every session of a step shares runs once without
gradient (:func:`shared_prefix_length`, :func:`prefix_cache`); the log-probs of the
sampled positions come from the LM head applied to those positions only
(:func:`token_logprobs`); :func:`policy_gradient` accumulates advantage × log-prob over
the micro-batches, normalised over every sampled token of the step; and on the first step
:func:`check_logprobs` stops a run whose recomputed log-probs disagree with the
sampler's, because such a loss would train on other tokens than the ones sampled.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from local_models.engine import common_prefix
from training.rollouts import SessionTokens
from training.state import Run


def batch_tensors(
    sessions: Sequence[SessionTokens], indices: Sequence[int], pad_id: int, device: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, loss mask (sampled tokens) and sampler log-probs."""
    width = max(len(sessions[i].ids) for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    attn = torch.zeros(len(indices), width, dtype=torch.long)
    sampled = torch.zeros(len(indices), width, dtype=torch.bool)
    old_logp = torch.zeros(len(indices), width)
    for row, i in enumerate(indices):
        s, n = sessions[i], len(sessions[i].ids)
        ids[row, :n] = torch.tensor(s.ids)
        attn[row, :n] = 1
        sampled[row, :n] = torch.tensor(s.sampled)
        old_logp[row, :n] = torch.tensor(s.logprobs)
    return ids.to(device), attn.to(device), sampled.to(device), old_logp.to(device)


def token_advantages(
    sessions: Sequence[SessionTokens],
    indices: Sequence[int],
    adv: Sequence[float],
    turn_adv: Sequence[Sequence[float]] | None,
    width: int,
    device: Any,
) -> torch.Tensor:
    """Each row's advantage at every position, plus, with ``turn_adv``, its turn's
    advantage on the ids sampled in that turn (``SessionTokens.turn``)."""
    out = torch.tensor([float(adv[i]) for i in indices])[:, None].repeat(1, width)
    if turn_adv is not None:
        for row, i in enumerate(indices):
            turn = torch.tensor(sessions[i].turn, dtype=torch.long)
            per_turn = torch.tensor([0.0, *turn_adv[i]])  # turn 0: not sampled, nothing added
            out[row, : len(turn)] += per_turn[turn]
    return out.to(device)


def micro_batches(n_sessions: int, size: int) -> list[list[int]]:
    """Session indices in consecutive groups of ``size`` (the last one shorter)."""
    return [list(range(i, min(i + size, n_sessions))) for i in range(0, n_sessions, size)]


class _HiddenStates(torch.nn.Module):
    """Stands in for the LM head during the forward pass: the model returns its final
    hidden states, and :func:`token_logprobs` applies the real head where it is needed."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


def _causal_lm(model: Any) -> Any:
    """The transformers causal LM inside accelerate's and peft's wrappers."""
    inner = getattr(model, "module", model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def shared_prefix_length(sessions: Sequence[SessionTokens]) -> int:
    """How many leading ids every session shares before any sampled token: the system
    prompt, the demonstrations and the template up to the first question."""
    first = sessions[0]
    n = len(first.ids)
    for s in sessions:
        unsampled = s.sampled.index(True) if True in s.sampled else len(s.ids)
        n = min(n, unsampled, common_prefix(first.ids, s.ids))
    return n


def prefix_cache(model: Any, prefix_ids: list[int], device: Any) -> Any:
    """The keys and values of ``prefix_ids`` (one sequence), computed without gradient;
    :func:`token_logprobs` repeats them for every sequence of a micro batch."""
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor([prefix_ids], device=device), use_cache=True, logits_to_keep=1
        )
    return out.past_key_values


def token_logprobs(
    model: Any,
    ids: torch.Tensor,
    attn: torch.Tensor,
    temperature: float,
    mask: torch.Tensor,
    prefix: Any = None,
    shared: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of each next token at the sampling temperature, and the entropy there,
    on the positions ``mask`` marks (the sampled tokens); 0 elsewhere.

    The LM head and the log-softmax run on those positions only: the full logits of
    every position (a 49,152-token vocabulary × ~1,000 positions × the micro batch, in
    float32, several times over with the backward pass) are what filled 24 GB on
    SmolLM2. The forward pass still goes through ``model`` itself (DDP and peft see it).

    ``prefix`` (from :func:`prefix_cache`) holds the keys and values of the first P ids
    every row shares; then only ids[:, P:] run through the model, attending to it.
    ``shared`` more ids after it that every row also holds (the history closing branches
    share) run once, for one row, with gradient, and every row continues from their keys
    and values: the numbers and gradients of running them in every row, at 1/rows the
    cost."""
    n_prefix = prefix.get_seq_length() if prefix is not None else 0
    start = n_prefix + shared
    if bool(mask[:, :start].any()):
        raise ValueError("a sampled token lies inside the shared prefix")
    lm = _causal_lm(model)
    head = lm.get_output_embeddings()
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    lm.set_output_embeddings(_HiddenStates())
    if softcap is not None:
        lm.config.final_logit_softcapping = None
    try:
        cache = copy.deepcopy(prefix) if prefix is not None else None
        if shared:  # one row, with gradient, on top of the prefix
            cache = model(
                input_ids=ids[:1, n_prefix:start], attention_mask=attn[:1, :start],
                past_key_values=cache, use_cache=True,
            ).past_key_values  # fmt: skip
        kwargs = {}
        if cache is not None:
            cache.batch_repeat_interleave(ids.shape[0])
            kwargs = {"past_key_values": cache, "use_cache": True}
        hidden = model(input_ids=ids[:, start:], attention_mask=attn, **kwargs).logits[:, :-1]
    finally:
        lm.set_output_embeddings(head)
        if softcap is not None:
            lm.config.final_logit_softcapping = softcap
    where = mask.bool()
    logits = head(hidden[where[:, start:]]).float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    logp_all = torch.log_softmax(logits / temperature, dim=-1)
    picked = logp_all.gather(-1, ids[:, 1:][where][:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    logp = torch.zeros(where.shape, dtype=picked.dtype, device=picked.device)
    ent = torch.zeros(where.shape, dtype=entropy.dtype, device=entropy.device)
    return logp.masked_scatter(where, picked), ent.masked_scatter(where, entropy)


@dataclass
class GradientSums:
    """What one step's backward passes add up to on this rank: the loss, the entropy and
    KL summed over sampled tokens (divided by ``step_tokens`` for the log), this rank's
    and every rank's sampled-token counts, and the first step's |recomputed - sampler|
    log-prob errors when the check is on."""

    loss: float = 0.0
    entropy: float = 0.0
    kl: float = 0.0
    tokens: float = 0.0
    step_tokens: float = 1.0
    reference_seconds: float = 0.0  # of the loss phase, spent in the KL reference passes
    # ids run through the model after the shared prefix: the sessions' own, and with the
    # micro batches' right padding (what the loss phase's compute is spent on)
    forward_tokens: int = 0
    padded_tokens: int = 0
    logprob_errors: list[torch.Tensor] = field(default_factory=list)


@dataclass
class _Prefixes:
    """The shared prefix's keys and values under the policy and (for the KL term) under
    the reference model, the adapter disabled; None when prefix reuse is off."""

    policy: Any = None
    reference: Any = None
    reference_seconds: float = 0.0


def _shared_prefixes(run: Run, sessions: Sequence[SessionTokens]) -> _Prefixes:
    """Run the ids every session shares once, without gradient, when ``reuse_prefix``
    allows; the last shared id stays in every row, so each row keeps at least one input."""
    cfg, accelerator, model = run.cfg, run.accelerator, run.model
    if not cfg.reuse_prefix or (n_prefix := shared_prefix_length(sessions)) <= 1:
        return _Prefixes()
    head_ids = sessions[0].ids[: n_prefix - 1]
    out = _Prefixes()
    with accelerator.autocast():
        out.policy = prefix_cache(model, head_ids, accelerator.device)
        if cfg.kl_coef > 0:
            t0 = time.perf_counter()
            with accelerator.unwrap_model(model).disable_adapter():
                out.reference = prefix_cache(
                    accelerator.unwrap_model(model), head_ids, accelerator.device
                )
            out.reference_seconds = time.perf_counter() - t0
    return out


def micro_batch_shared(run: Run, group: Sequence[SessionTokens], n_prefix: int) -> int:
    """How many ids after the step's shared prefix (``n_prefix``) every session of a micro
    batch still shares before its first sampled id, less the last one (each row keeps at
    least one input): the closing branches of one episode share their whole history. 0
    without ``reuse_prefix`` or with one row."""
    if not run.cfg.reuse_prefix or len(group) < 2:
        return 0
    return max(shared_prefix_length(group) - 1 - n_prefix, 0)


def policy_gradient(
    run: Run,
    sessions: Sequence[SessionTokens],
    adv: Sequence[float],
    check: bool,
    turn_adv: Sequence[Sequence[float]] | None = None,
) -> GradientSums:
    """Accumulate the REINFORCE gradient (and the k3 KL penalty to the base model when
    ``kl_coef`` is set) over micro-batches, gradients synchronised across ranks on the
    last one only. ``adv``: one advantage per session, on all its sampled tokens;
    ``turn_adv`` (optional): per session and turn, added on that turn's tokens. Every
    rank divides by the mean token count of the step, so the all-reduced gradient is the
    loss normalised over all tokens of all ranks. ``check``:
    run :func:`check_logprobs` on this step's tokens before any update."""
    cfg, accelerator, model = run.cfg, run.accelerator, run.model
    n_tokens = torch.tensor(float(sum(sum(s.sampled) for s in sessions)), device=accelerator.device)
    step_tokens = max(float(accelerator.reduce(n_tokens, "sum")), 1.0)  # all ranks
    total_tokens = max(step_tokens / accelerator.num_processes, 1.0)
    sums = GradientSums(tokens=float(n_tokens), step_tokens=step_tokens)
    prefixes = _shared_prefixes(run, sessions)
    sums.reference_seconds = prefixes.reference_seconds
    micro = micro_batches(len(sessions), cfg.micro_batch_size)
    n_prefix = prefixes.policy.get_seq_length() if prefixes.policy is not None else 0
    for j, idx in enumerate(micro):
        ids, attn, sampled, old_logp = batch_tensors(
            sessions, idx, run.tokenizer.pad_token_id, accelerator.device
        )
        mask = sampled[:, 1:].float()
        shared = micro_batch_shared(run, [sessions[i] for i in idx], n_prefix)
        sums.forward_tokens += int(attn.sum()) - n_prefix * len(idx) - shared * (len(idx) - 1)
        sums.padded_tokens += (ids.shape[1] - n_prefix - shared) * len(idx) + shared
        a = token_advantages(sessions, idx, adv, turn_adv, ids.shape[1], accelerator.device)
        a = a[:, 1:]  # aligned with mask and logp: position p scores ids[:, p + 1]
        sync = j == len(micro) - 1
        with nullcontext() if sync else accelerator.no_sync(model), accelerator.autocast():
            logp, entropy = token_logprobs(
                model, ids, attn, cfg.temperature, mask, prefixes.policy, shared
            )
            loss = -(a * logp * mask).sum() / total_tokens
            if cfg.kl_coef > 0:
                t0 = time.perf_counter()
                kl = _kl_to_reference(run, ids, attn, mask, logp, prefixes.reference, shared)
                sums.reference_seconds += time.perf_counter() - t0
                loss = loss + cfg.kl_coef * kl.sum() / total_tokens
                sums.kl += float(kl.detach().sum())
            accelerator.backward(loss)
        sums.loss += loss.item()
        sums.entropy += float((entropy.detach() * mask).sum())
        if check:
            sums.logprob_errors.append(
                (logp.detach() - old_logp[:, 1:]).abs()[mask.bool()].float().cpu()
            )
    if check:
        check_logprobs(torch.cat(sums.logprob_errors), logprob_tolerance(run), run.log)
    return sums


def _kl_to_reference(
    run: Run,
    ids: torch.Tensor,
    attn: torch.Tensor,
    mask: torch.Tensor,
    logp: torch.Tensor,
    reference_prefix: Any,
    shared: int = 0,
) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || base), >= 0, on the sampled positions; the
    base model is the policy with its adapter disabled, so no second copy is held."""
    unwrapped = run.accelerator.unwrap_model(run.model)
    with torch.no_grad(), unwrapped.disable_adapter():
        ref_logp, _ = token_logprobs(
            unwrapped, ids, attn, run.cfg.temperature, mask, reference_prefix, shared
        )
    log_ratio = ref_logp - logp
    return (log_ratio.exp() - 1 - log_ratio) * mask


# First-step check of |recomputed - sampler| log-probs, per sampled token: in float32 the
# two computations agree to rounding; in bfloat16 the sampler (the session engine's
# kernels) and the training forward round differently. On SmolLM2 (16 sessions, 1,271
# sampled tokens, benchmarks/bench_training.py) bf16 gave mean 0.022, p99 0.21, max 0.29,
# while the same tokens misaligned by one gave a mean of 1.27: bf16 bounds the mean and
# the 99th percentile, with room for rounding and none for a misaligned loss.
LOGPROB_TOLERANCE = {
    "exact": {"max": 1e-3},
    "vllm": {"mean": 1e-3, "p99": 1e-2},
    "bf16": {"mean": 0.1, "p99": 0.5},
}


def logprob_tolerance(run: Run) -> str:
    """Which :data:`LOGPROB_TOLERANCE` row applies: float32 with the same kernels on both
    sides (exact), float32 with vLLM's kernels sampling (vllm), or mixed precision (bf16)."""
    kind = "exact" if run.accelerator.mixed_precision == "no" else "bf16"
    if run.vllm is not None and kind == "exact":
        kind = "vllm"  # float32 on both sides, but other kernels
    return kind


def check_logprobs(errors: torch.Tensor, kind: str, log: Callable[[str], None]) -> None:
    """Stop before the first update when training would score other tokens than the ones
    the sampler sampled: ``errors`` (|recomputed - sampler| per sampled token) against the
    ``kind`` row of :data:`LOGPROB_TOLERANCE`, the figures logged either way."""
    if errors.numel() == 0:
        return
    figures = {
        "mean": float(errors.mean()),
        "p99": float(torch.quantile(errors, 0.99)),
        "max": float(errors.max()),
    }
    limits = LOGPROB_TOLERANCE[kind]
    verdict = "ok" if all(figures[k] <= v for k, v in limits.items()) else "MISMATCH"
    log(
        f"first-step check over {errors.numel()} sampled tokens: |recomputed - sampler| "
        + ", ".join(f"{k} {v:.2e}" for k, v in figures.items())
        + f" (limits {', '.join(f'{k} {v:g}' for k, v in limits.items())}): {verdict}"
    )
    if verdict != "ok":
        raise RuntimeError(
            "recomputed log-probs do not match the sampler's: the loss would train on other tokens"
        )
