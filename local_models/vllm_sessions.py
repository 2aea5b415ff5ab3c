"""Sessions on vLLM: the :class:`local_models.engine.Driver` protocol served by a
``vllm.LLM``, so evaluation and training rollouts run on the engine users scale on.

Each wave of turns (the current turn of every running session) is one ``LLM.generate``
call: prompts go in as token ids (the exact ids the session engine would prefill), one
``SamplingParams`` per request with ``max_tokens`` = that turn's budget, the turn's stop
strings and the model's EOS ids, and a per-(session, turn) seed when sampling. vLLM's
automatic prefix caching serves what a session's earlier turns and the shared
demonstrations already computed, in place of the engine's per-session KV rows.

A turn's result is built from the generated ids alone, as the session engine builds
it: the kept text is the decode of exactly those ids cut at the first stop string (the
same :func:`local_models.engine.finished_text`), ``cut`` is true iff the request ran out
of budget (finish reason ``length``) before an EOS or a stop string. With ``logprobs``
each sampled id carries vLLM's log-probability of it; pass ``logprobs_mode=
"processed_logprobs"`` to ``LLM`` so that is the sampler's (after temperature), as the
engine's is."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from local_models.engine import (
    Ask,
    Driver,
    EngineStats,
    Generated,
    Sampling,
    finished_text,
    turn_seed,
)

REGISTRY_COMMAND = [sys.executable, "-m", "local_models.torch_extensions", "vllm-registry"]


def cpu_thread_binding() -> str | None:
    """``VLLM_CPU_OMP_THREADS_BIND`` for every core this process may use ("0-1"), or None
    when those cores are not one contiguous range (vLLM's default then applies)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cores or cores != list(range(cores[0], cores[-1] + 1)):
        return None
    return f"{cores[0]}-{cores[-1]}"


def prepare_vllm() -> bool:
    """Before a ``vllm.LLM`` starts: vLLM's model-inspection subprocess hides broken torch
    extensions too (its ``_SUBPROCESS_COMMAND`` is the documented place to change that
    interpreter), and on the CPU, unless set in the environment, vLLM's OpenMP threads
    bind to every core this process may use (by default vLLM reserves one). Returns
    whether vLLM runs on the CPU."""
    import vllm.model_executor.models.registry as registry
    from vllm.platforms import current_platform

    registry._SUBPROCESS_COMMAND = list(REGISTRY_COMMAND)
    if not current_platform.is_cpu():
        return False
    binding = cpu_thread_binding()
    if binding is not None:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", binding)
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    return True


def sampling_params(
    ask: Ask, sampling: Sampling, eos_ids: Sequence[int], seed: int, logprobs: bool
):
    """One request's ``SamplingParams``: the turn's budget, stops and EOS ids, greedy or
    seeded sampling."""
    from vllm import SamplingParams

    kwargs: dict[str, Any] = {
        "max_tokens": ask.budget,
        "stop": list(ask.stop),
        "stop_token_ids": list(eos_ids),
        "logprobs": 0 if logprobs else None,
    }
    if sampling.greedy:
        kwargs["temperature"] = 0.0
    else:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, seed=seed)
        if sampling.top_k:
            kwargs["top_k"] = sampling.top_k
    return SamplingParams(**kwargs)


def _check_ask(ask: Ask, session: int, max_length: int | None) -> None:
    if ask.budget < 1:
        raise ValueError(f"session {session}: a turn's budget must be at least 1, got {ask.budget}")
    if not ask.context:
        raise ValueError(f"session {session}: a turn's context is empty")
    if max_length and len(ask.context) + ask.budget > max_length:
        raise ValueError(
            f"session {session} needs {len(ask.context)} context tokens + a budget of "
            f"{ask.budget}, over vLLM's max_model_len {max_length}; use fewer demonstrations "
            "(--num_fewshot), or a larger max_model_len in --model_args"
        )


def generated(
    output: Any, ask: Ask, decode: Callable[[list[int]], str], eos_ids: set[int]
) -> Generated:
    """A finished turn from one vLLM ``CompletionOutput``, built from its ids."""
    ids = [int(i) for i in output.token_ids]
    eos = bool(ids) and ids[-1] in eos_ids
    text = finished_text(decode, ids, eos, ask.stop)
    stopped = eos or output.finish_reason == "stop"
    logprobs = (
        [float(d[i].logprob) for d, i in zip(output.logprobs, ids)] if output.logprobs else []
    )
    return Generated(ids, text, cut=not stopped, logprobs=logprobs, eos=eos)


def run_on_vllm(
    llm: Any,
    drivers: Sequence[Driver],
    sampling: Sampling,
    *,
    decode: Callable[[list[int]], str],
    eos_ids: Sequence[int],
    lora_request: Any = None,
    logprobs: bool = False,
    max_length: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> EngineStats:
    """Generate every turn of every session, one ``LLM.generate`` call per wave; results
    go back through the drivers. Returns the figures vLLM reports per request (prompt
    tokens computed and served from its prefix cache, tokens generated)."""
    from vllm import TokensPrompt

    stats = EngineStats()
    eos = {int(i) for i in eos_ids}
    turns = [0] * len(drivers)
    asks: dict[int, Ask] = {}
    for i, d in enumerate(drivers):
        ask = d.step(None)
        if ask is not None:
            asks[i] = ask
    while asks:
        order = sorted(asks)
        for i in order:
            _check_ask(asks[i], i, max_length)
        prompts = [TokensPrompt(prompt_token_ids=list(asks[i].context)) for i in order]
        params = [
            sampling_params(
                asks[i], sampling, sorted(eos), turn_seed(sampling.seed, i, turns[i]), logprobs
            )
            for i in order
        ]
        began = time.perf_counter()
        with engine_death_raises(llm):
            outputs = llm.generate(prompts, params, use_tqdm=False, lora_request=lora_request)
        stats.decode_seconds += time.perf_counter() - began
        stats.forward_passes += 1
        stats.max_rows = max(stats.max_rows, len(order))
        if len(outputs) != len(order):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(order)} requests")
        for i, out in zip(order, outputs):
            ask = asks.pop(i)
            done = generated(out.outputs[0], ask, decode, eos)
            cached = int(getattr(out, "num_cached_tokens", 0) or 0)
            stats.reused_tokens += cached
            stats.prefilled_tokens += len(ask.context) - cached
            stats.generated_tokens += len(done.ids)
            turns[i] += 1
            if progress is not None:
                progress(1)
            nxt = drivers[i].step(done)
            if nxt is not None:
                asks[i] = nxt
    return stats


def eos_ids_of(llm: Any) -> set[int]:
    """Every id that ends a turn on this vLLM model: the tokenizer's EOS and the
    generation config's (Gemma lists two), as vLLM itself stops on them
    (:func:`interrupt_bench.turn_contract.eos_ids`)."""
    from interrupt_bench.turn_contract import eos_ids

    config = llm.llm_engine.model_config.try_get_generation_config() or {}
    return set(eos_ids(llm.get_tokenizer().eos_token_id, config.get("eos_token_id")))


@contextmanager
def engine_death_raises(llm: Any, poll_s: float = 0.5) -> Iterator[None]:
    """Within the block, an ``LLM.generate`` whose engine process dies raises vLLM's
    ``EngineDeadError`` instead of waiting forever.

    vLLM's synchronous client waits on a queue its output thread fills. When the engine
    process dies, the client's liveness monitor marks the engine dead and stops that
    thread, and nothing is put on the queue, so a ``generate`` already waiting never
    returns (a ``generate`` that starts after the death raises by itself). A daemon thread
    here watches the same flag and puts the error on the queue. An engine without that
    client (in-process, ``VLLM_ENABLE_V1_MULTIPROCESSING=0``) is left as it is."""
    client = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    resources = getattr(client, "resources", None)
    queue = getattr(client, "outputs_queue", None)
    if resources is None or queue is None or not hasattr(resources, "engine_dead"):
        yield
        return
    from vllm.v1.engine.exceptions import EngineDeadError

    done = threading.Event()

    def watch() -> None:
        while not done.wait(poll_s):
            if resources.engine_dead:
                queue.put_nowait(EngineDeadError())
                return

    watcher = threading.Thread(target=watch, name="interrupt-bench-engine-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
