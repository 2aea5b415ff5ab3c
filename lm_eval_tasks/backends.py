"""Session backends: engines that play many sessions' turns at once, each session a
driver (:class:`local_models.engine.Driver`) that asks for its next turn as token ids.

Two serve :class:`SessionBackend`: the session engine (:class:`EngineBackend`, lm-eval's
``hf`` models: per-session KV caches, continuous batching, the cut on the generated ids)
and vLLM (:class:`lm_eval_tasks.vllm_backend.VllmBackend`: one ``LLM.generate`` per wave
of turns). :func:`replay_sessions` plays sessions on either, and :func:`replay_error`
turns what a backend raises into the one line that ends the run, named by the backend."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from interrupt_bench import turn_contract
from interrupt_bench.episodes import Episode
from interrupt_bench.errors import ConfigError
from interrupt_bench.session import SessionRun, Transcript, TurnResult
from lm_eval_tasks.cache_identity import cache_attr, cache_attr_when_caching
from lm_eval_tasks.settings import RunSettings
from lm_eval_tasks.turns import SessionReplayError, text_result, turn_prompt
from local_models.chat import model_config_eos
from local_models.engine import Ask, Driver, EngineStats, Generated, Sampling

log = logging.getLogger("interrupt_bench")


class SessionBackend(Protocol):
    """An engine that plays every turn of many sessions on the evaluated model ``lm``."""

    lm: Any  # the lm-eval model: its prompts, tokenizer and cache hook
    name: str  # how its logs and every error it ends a run with name it
    refusals: tuple[type[Exception], ...]  # a request it refused: SessionReplayError
    setting_errors: tuple[type[Exception], ...]  # a setting it cannot honour: ConfigError
    crash_subject: str | None  # what died when anything else fails; None: a bug, raised

    def run(
        self,
        drivers: Sequence[Driver],
        sampling: Sampling,
        settings: RunSettings,
        progress: Callable[[int], None],
    ) -> EngineStats:
        """Play every turn of ``drivers`` (sessions of the same ``settings``)."""
        ...

    def summary(self, sessions: int, stats: EngineStats) -> str:
        """One log line on a finished run."""
        ...


class SessionDriver:
    """One session on a backend: turns become token ids of the exact prompt a
    ``generate_until`` call would get, results go back into the session's transcript.

    With ``--use_cache DB`` each greedy turn is stored under the key the per-request
    path uses (the two paths give the same text; :func:`cache_attr` names the model),
    and a turn found there is not generated again: a rerun after a crash resumes."""

    def __init__(self, lm: Any, run: SessionRun, settings: RunSettings, sent: dict, attr: str = ""):
        self.lm, self.run, self.settings, self.sent = lm, run, settings, sent
        hook = getattr(lm, "cache_hook", None)
        self.hook = hook if getattr(hook, "dbdict", None) is not None else None
        self.attr = attr or (cache_attr(lm) if self.hook is not None else "generate_until")
        self.stops = tuple(settings.stop_strings())
        self.asked: tuple | None = None  # (prompt, kwargs) of the turn being generated

    def step(self, done: Generated | None) -> Ask | None:
        from lm_eval.api.model import hash_args

        if done is not None:
            self.run.record(TurnResult(done.text, done.cut, done.n_tokens))
            if self.hook is not None and self.asked is not None:
                self.hook.add_partial(self.attr, self.asked, done.text)
        while (request := self.run.next_request()) is not None:
            prompt = turn_prompt(self.lm, request, self.settings)
            self.sent[(request.session, request.turn)] = prompt
            self.asked = (prompt, self.settings.turn_kwargs(request.budget))
            key = None
            if self.hook is not None and self.settings.greedy:
                key = hash_args(self.attr, self.asked)
            if key is None or key not in self.hook.dbdict:
                return Ask(self.lm.tok_encode(prompt), request.budget, self.stops)
            # cached: the cut is known only from re-encoding
            self.run.record(text_result(self.lm, self.hook.dbdict[key], request.budget))
        return None


def generation_groups(settings: Sequence[RunSettings]) -> dict[str, list[int]]:
    """Sessions by their generation settings: each group is one run of a backend."""
    groups: dict[str, list[int]] = {}
    for i, st in enumerate(settings):
        groups.setdefault(st.generation_key, []).append(i)
    return groups


def check_generation_settings(settings: Sequence[RunSettings], sampler: str | None) -> None:
    """Refuse generation kwargs that cannot be honoured, before any turn is generated
    (``ConfigError``, one line). Every value was checked when its settings were made;
    where ``sampler`` (a backend's name) chooses the tokens, also what
    :meth:`Sampling.from_generation_kwargs` refuses, named by that backend, so a second
    group of settings cannot fail after the first has been generated."""
    if sampler is None:
        return
    for st in settings:
        Sampling.from_generation_kwargs(dict(st.generation_kwargs), backend=sampler)


def replay_error(backend: SessionBackend, exc: Exception) -> Exception | None:
    """What a backend's failure ends the run with, named by the backend; None: raise it
    as it is (a bug, with its traceback)."""
    if isinstance(exc, backend.setting_errors):  # the KV bound: one line, as any setting
        return ConfigError(f"{backend.name}: {exc}")
    if isinstance(exc, backend.refusals):
        return SessionReplayError(f"{backend.name}: {exc}")
    if backend.crash_subject is None:
        return None
    log.debug("%s failed", backend.name, exc_info=exc)  # the whole chain, for the DEBUG log
    return SessionReplayError(
        f"{backend.crash_subject} failed during the sessions ({type(exc).__name__}: "
        f"{str(exc)[:300]}). Nothing was scored or written; fix the engine and run again "
        "(with --use_cache DB, turns already generated are reused)"
    )


@dataclass
class Replayed:
    """Sessions played on a backend: their transcripts, the prompt of every turn sent
    (``(session, turn)`` -> prompt) and each run's figures."""

    transcripts: list[Transcript]
    prompts: dict
    stats: list[EngineStats]


def replay_sessions(
    backend: SessionBackend, episodes: Sequence[Episode], settings: Sequence[RunSettings]
) -> Replayed:
    """Play every session on ``backend``: one run per set of generation settings, each
    session a :class:`SessionDriver` (``settings[i]`` are session i's)."""
    import torch
    from tqdm import tqdm

    lm = backend.lm
    runs = [SessionRun(ep, i) for i, ep in enumerate(episodes)]
    sent: dict = {}
    attr = cache_attr_when_caching(lm)
    total = sum(sum(b > 0 for b in ep.turn_budgets()) for ep in episodes)
    bar = tqdm(total=total, desc="interrupt_bench turns", disable=getattr(lm, "rank", 0) != 0)
    all_stats = []
    for members in generation_groups(settings).values():
        first = settings[members[0]]
        sampling = Sampling.from_generation_kwargs(
            dict(first.generation_kwargs), seed=torch.initial_seed(), backend=backend.name
        )
        drivers = [SessionDriver(lm, runs[i], settings[i], sent, attr) for i in members]
        try:
            stats = backend.run(drivers, sampling, first, bar.update)
        except Exception as exc:
            error = replay_error(backend, exc)
            if error is None:
                raise
            bar.close()  # before the error line, which stays the last
            raise error from None
        all_stats.append(stats)
        log.info("interrupt_bench %s", backend.summary(len(members), stats))
    bar.close()
    return Replayed([run.transcript for run in runs], sent, all_stats)


def eos_ids(lm: Any) -> set[int]:
    """Every id that ends a turn, as ``model.generate`` in lm-eval's ``hf`` path stops on
    them: the tokenizer's EOS and the generation config's (Gemma lists two)."""
    return set(turn_contract.eos_ids(lm.eot_token_id, model_config_eos(lm.model)))


def engine_unsupported(lm: Any, settings: Sequence[RunSettings]) -> str | None:
    """Why these sessions cannot replay on the session engine (None: they can). The
    engine serves lm-eval's ``hf`` causal models under ``turn_batching: auto``."""
    modes = {s.turn_batching for s in settings}
    if modes != {"auto"}:
        return f"turn_batching {sorted(modes)}"
    from lm_eval.models.huggingface import HFLM

    if not isinstance(lm, HFLM) or getattr(lm, "backend", "causal") != "causal":
        return f"{type(lm).__name__} is not a local Hugging Face causal LM"
    if getattr(lm, "think_end_token", None) is not None:
        return "think_end_token is set"
    return None


class EngineBackend:
    """The session engine (:class:`local_models.engine.SessionEngine`) on lm-eval's
    ``hf`` model: one engine per run, its KV bound from ``metadata.max_cache_gb``."""

    name = "session engine"
    refusals = (ValueError, NotImplementedError)
    setting_errors = (MemoryError,)
    crash_subject = None

    def __init__(self, lm: Any):
        self.lm = lm

    def run(
        self,
        drivers: Sequence[Driver],
        sampling: Sampling,
        settings: RunSettings,
        progress: Callable[[int], None],
    ) -> EngineStats:
        from local_models.engine import SessionEngine

        lm = self.lm
        engine = SessionEngine(
            lm.model,
            lambda ids: lm.tok_decode(ids),
            eos_ids=sorted(eos_ids(lm)),
            batch_size=lm.batch_size if isinstance(lm.batch_size, int) else 32,
            sampling=sampling,
            max_length=lm.max_length,
            max_cache_gb=settings.max_cache_gb,
            progress=progress,
        )
        return engine.run(drivers)

    def summary(self, sessions: int, stats: EngineStats) -> str:
        return (
            f"engine: {sessions} sessions, {stats.generated_tokens} tokens generated, "
            f"{stats.prefilled_tokens} prefilled, {stats.reused_tokens} reused from caches, "
            f"{stats.forward_passes} forward passes ({stats.prefill_passes} prefill: "
            f"{stats.prefill_seconds:.1f} s, decode: {stats.decode_seconds:.1f} s), up to "
            f"{stats.max_rows} rows"
        )
