"""Multi-turn generation for lm-evaluation-harness, without a fork.

lm-eval sends a task's Instances to ``getattr(lm, instance.request_type)``. The task pack
emits Instances of its own type, ``interrupt_session``, and :func:`install` gives every
``lm_eval.api.model.LM`` a method of that name. On lm-eval's ``hf`` model the method
runs every session on the session engine (:mod:`local_models.engine`: per-session KV
caches, continuous batching, cut on the generated ids). On a model that holds a
``vllm.LLM`` (lm-eval's ``vllm``, or ``interrupt-bench-vllm``) it drives that engine
through the same driver protocol (:mod:`local_models.vllm_sessions`: one
``LLM.generate`` per wave of turns, ids in, the cut from each request's finish reason).
On every other backend it
replays the sessions turn by turn through the one method every backend implements,
``generate_until``: at turn t, the requests of every session still running go out in a
single call, each with ``max_gen_toks`` set to that turn's budget (tokens of the
evaluated model), so lm-eval's own batching, progress bar and response cache apply.
Budget-0 turns skip the model. The cut text stays in the conversation and the next
question follows.

``args`` of an Instance: ``(episode row as JSON, settings)``; settings hold the
condition (interrupted / nocut / single / paired), the budget cap of the controls, whether to use
the model's chat template, the ``--system_instruction`` and the generation kwargs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from interrupt_bench import turn_contract
from interrupt_bench.controls import CONTROL_BUDGET, check_budget_cap, labelled_sessions
from interrupt_bench.episodes import Episode
from interrupt_bench.errors import ConfigError, InterruptBenchError
from interrupt_bench.session import SessionRun, Transcript, TurnRequest, TurnResult, replay
from local_models.chat import model_config_eos, render
from local_models.engine import Ask, Generated, Sampling, check_sampling_values, stop_list

REQUEST_TYPE = "interrupt_session"
log = logging.getLogger("interrupt_bench")


def install() -> None:
    """Give every lm-eval LM the ``interrupt_session`` method, and make an uncaught
    :class:`InterruptBenchError` end the program with its one line (idempotent)."""
    from lm_eval.api.model import LM

    if getattr(LM, REQUEST_TYPE, None) is not interrupt_session:
        setattr(LM, REQUEST_TYPE, interrupt_session)
    if not getattr(sys.excepthook, "interrupt_bench", False):
        sys.excepthook = _one_line_excepthook(sys.excepthook)


def _one_line_excepthook(previous: Any) -> Any:
    """lm-eval's CLI lets every exception end the program with a traceback. An
    ``InterruptBenchError`` is the user's input (a value, a row, a path), and its message
    names the problem and the fix, so it ends in that one line on stderr (exit status 1);
    the traceback goes to the ``interrupt_bench`` DEBUG log. Anything else, a bug
    included, keeps the hook that was installed before."""

    def hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        if isinstance(exc, InterruptBenchError):
            log.debug("interrupt_bench: %s", type(exc).__name__, exc_info=(exc_type, exc, tb))
            print(f"interrupt_bench: {exc}", file=sys.stderr, flush=True)
            return
        previous(exc_type, exc, tb)

    hook.interrupt_bench = True  # type: ignore[attr-defined]
    return hook


def request_args(episode_row: dict[str, Any], settings: dict[str, Any]) -> tuple[str, dict]:
    """The Instance arguments for one episode: JSON text first (lm-eval hashes it)."""
    return json.dumps(episode_row, ensure_ascii=False, sort_keys=True), dict(settings)


def count_tokens(lm: Any, text: str) -> int | None:
    """Tokens of ``text`` in the evaluated model's tokenizer, or None when it has none."""
    tokenizer = getattr(lm, "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "encode"):
        return None
    try:
        return len(tokenizer.encode(text, add_special_tokens=False))
    except TypeError:  # tiktoken and other encoders without that keyword
        return len(tokenizer.encode(text))


def counted_result(lm: Any, text: str, budget: int) -> TurnResult:
    """A turn known only as text (from ``--use_cache``, or back from ``generate_until``):
    its tokens counted in the evaluated model's tokenizer, and the budget taken to have
    cut it when they reach the budget, since no finish reason says so (both None when
    the model has no tokenizer)."""
    n = count_tokens(lm, text)
    return TurnResult(text, None if n is None else n >= budget, n)


def truncate_tokens(lm: Any, text: str, budget: int) -> str:
    """``text`` cut to at most ``budget`` tokens of the evaluated model's tokenizer."""
    tokenizer = lm.tokenizer
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= budget:
        return text
    for keep in range(budget, -1, -1):  # re-encoding a decoded prefix can merge tokens
        cut = tokenizer.decode(ids[:keep], skip_special_tokens=True)
        if len(tokenizer.encode(cut, add_special_tokens=False)) <= budget:
            return cut
    return ""


def shares_budgets(mode: str) -> bool:
    """Whether one turn's requests go out through ``generate_until`` with one shared
    ``max_gen_toks`` (the largest budget) and are cut to their own budgets afterwards.

    Only ``shared`` does. ``generate_until`` returns text, so the cut re-encodes it, and
    re-encoding decoded text does not always give back the generated ids (a decoded
    ``'café \ufffd'`` re-encodes to more tokens than were generated): the kept text can
    differ from a generation capped at the budget. ``auto`` therefore replays on the
    session engine for local Hugging Face models (which cuts on the generated ids) and
    with exact per-request budgets on every other backend."""
    if mode not in TURN_BATCHING:
        raise ConfigError(
            f"metadata turn_batching is {json.dumps(mode)}; use auto (the session engine on "
            "hf, exact elsewhere), exact or shared"
        )
    return mode == "shared"


TURN_BATCHING = ("auto", "exact", "shared")


def turn_prompt(lm: Any, request: TurnRequest, settings: dict[str, Any]) -> str:
    """The prompt of one turn as the model sees it, rendered by :func:`local_models.chat.
    render`, the renderer training uses too: ``--system_instruction`` before the system
    prompt, the demonstrations, then the session so far, through the model's chat
    template (``lm.apply_chat_template``) or in plain mode."""
    chat = settings["chat"]
    template = partial(lm.apply_chat_template, add_generation_prompt=True) if chat else None
    return render(
        template,
        request.messages,
        settings.get("fewshot") or [],
        settings.get("fewshot_placement", "turns"),
        settings.get("system_instruction"),
    )


def stop_strings(settings: dict[str, Any]) -> list[str]:
    """What ends a turn besides EOS and the budget: the task's ``until`` (default: the
    next question's opening tag; one string is one stop string, as in lm-eval's models),
    plus the next ``User:`` line in plain mode."""
    until = stop_list(settings.get("generation_kwargs", {}).get("until"))
    return turn_contract.stop_strings(settings["chat"], until)


def turn_kwargs(settings: dict[str, Any], max_gen_toks: int) -> dict[str, Any]:
    """A turn's ``generate_until`` kwargs (also its key in lm-eval's ``--use_cache``)."""
    return {
        "do_sample": False,
        **settings.get("generation_kwargs", {}),
        "until": stop_strings(settings),
        "max_gen_toks": max_gen_toks,
    }


def weights_fingerprint(module: Any) -> str:
    """A hash of a torch module's weights as loaded: every parameter's name, shape and
    dtype, the sum of its elements' bit patterns as integers (exact, so the same on every
    device and thread count; any changed element changes it) and a strided sample of
    them. One pass over the weights: seconds for a 7B model on a CPU."""
    import torch

    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in module.named_parameters():
            digest.update(f"{name}:{tuple(param.shape)}:{param.dtype};".encode())
            width = param.element_size()
            if param.device.type == "meta" or param.numel() == 0 or width not in as_int:
                continue
            bits = param.detach().contiguous().view(as_int[width]).reshape(-1)
            total = int(bits.sum(dtype=torch.int64))
            sample = bits[:: max(1, bits.numel() // 64)].to("cpu", torch.int64).tolist()
            digest.update(f"{total}:{sample};".encode())
    return digest.hexdigest()


def _files_fingerprint(path: object) -> list | None:
    """Name, size and modification time of each file in a local model or adapter
    directory (a rewritten checkpoint changes them); None when ``path`` is not one."""
    if not path or not os.path.isdir(str(path)):
        return None
    folder = Path(str(path)).resolve()
    files = [f for f in sorted(folder.iterdir()) if f.is_file()]
    return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def model_identity(lm: Any) -> str:
    """What a cached turn must have been generated by (16 hex digits), so that
    ``--use_cache DB`` never hands one model's turns to another: on a local torch model
    (lm-eval's ``hf``, a PEFT adapter on it included) its weights as loaded
    (:func:`weights_fingerprint`, so the dtype, the adapter and merged deltas count),
    its config and its tokenizer's size; on vLLM the model, revision, dtype and
    quantization, the LoRA adapter, and the files of both when they are directories;
    on any other backend its class and the attributes that name its model."""
    parts: dict[str, Any] = {"class": f"{type(lm).__module__}.{type(lm).__qualname__}"}
    module = getattr(lm, "model", None)
    llm = vllm_model(lm)
    torch = sys.modules.get("torch")
    if llm is not None:
        config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
        fields = ("model", "revision", "dtype", "quantization", "tokenizer", "max_model_len")
        parts["vllm"] = {k: str(getattr(config, k, None)) for k in fields}
        parts["files"] = _files_fingerprint(getattr(config, "model", None))
        lora = getattr(lm, "lora_request", None)
        if lora is not None:
            lora_path = getattr(lora, "lora_path", None) or getattr(lora, "lora_local_path", None)
            parts["lora"] = [str(lora_path), _files_fingerprint(lora_path)]
    elif torch is not None and isinstance(module, torch.nn.Module):
        parts["weights"] = weights_fingerprint(module)
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            skip = {"_name_or_path", "_commit_hash", "transformers_version"}
            parts["config"] = {k: v for k, v in config.to_dict().items() if k not in skip}
        tokenizer = getattr(lm, "tokenizer", None)
        if tokenizer is not None:
            size = len(tokenizer) if hasattr(tokenizer, "__len__") else None
            parts["tokenizer"] = [type(tokenizer).__name__, size]
        parts["add_bos_token"] = getattr(lm, "add_bos_token", None)
    else:
        names = ("model", "pretrained", "model_name", "base_url", "revision", "dtype", "policy")
        parts["attributes"] = {
            k: v for k in names if isinstance(v := getattr(lm, k, None), (str, int, float))
        }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_attr(lm: Any) -> str:
    """The request name turns are cached under in ``--use_cache DB``: lm-eval's
    ``generate_until`` key names only the prompt and the generation kwargs, so every
    model run against one DB would get the first model's turns; ours adds
    :func:`model_identity`."""
    return f"generate_until@{model_identity(lm)}"


def _cache_attr_when_caching(lm: Any) -> str:
    """:func:`cache_attr` once per replay when ``--use_cache`` is on, else ``""``."""
    return cache_attr(lm) if getattr(getattr(lm, "cache_hook", None), "dbdict", None) else ""


class _KeyedCacheHook:
    """The model's cache hook while a turn goes through its ``generate_until``: what the
    backend stores under lm-eval's key for a request goes under :func:`cache_attr`'s,
    so a run stopped mid-turn resumes from it and no other model reads it."""

    def __init__(self, hook: Any, attr: str):
        self.hook, self.attr, self.dbdict = hook, attr, hook.dbdict

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        self.hook.add_partial(self.attr if attr == "generate_until" else attr, req, res)


class SessionReplayError(RuntimeError):
    """The evaluated model failed during a session: stop rather than score silent zeros."""


class _Responder:
    """Answers one turn of many sessions with one ``generate_until`` call."""

    def __init__(self, lm: Any, settings: Sequence[dict[str, Any]]):
        self.lm = lm
        self.settings = settings  # per session
        self.prompts: dict[tuple[int, int], str] = {}  # (session, turn) -> prompt sent
        self.hook = getattr(lm, "cache_hook", None)
        self.cache = getattr(self.hook, "dbdict", None)  # set by --use_cache
        self.attr = cache_attr(lm) if self.cache is not None else "generate_until"

    def _group(self, request: TurnRequest) -> str | None:
        """Requests that may share one ``max_gen_toks``; None: this one keeps its own."""
        settings = self.settings[request.session]
        if not shares_budgets(settings.get("turn_batching", "auto")):
            return None
        return json.dumps(settings.get("generation_kwargs", {}), sort_keys=True)

    def __call__(self, requests: list[TurnRequest]) -> list[TurnResult]:
        from lm_eval.api.instance import Instance
        from lm_eval.api.model import hash_args

        instances, results, todo = [], [None] * len(requests), []
        shared_max: dict[str, int] = {}  # generation settings -> largest budget among them
        for request in requests:
            key = self._group(request)
            if key is not None:
                shared_max[key] = max(shared_max.get(key, 0), request.budget)
        for i, request in enumerate(requests):
            settings = self.settings[request.session]
            prompt = turn_prompt(self.lm, request, settings)
            self.prompts[(request.session, request.turn)] = str(getattr(prompt, "prompt", prompt))
            gen_kwargs = turn_kwargs(settings, shared_max.get(self._group(request), request.budget))
            args = (prompt, gen_kwargs)
            key = hash_args(self.attr, args)
            if self.cache is not None and not gen_kwargs.get("do_sample") and key in self.cache:
                results[i] = self.cache[key]
                continue
            todo.append(i)
            instances.append(
                Instance(
                    request_type="generate_until",
                    doc={"episode_id": request.episode.episode_id, "turn": request.turn + 1},
                    arguments=args,
                    idx=0,
                    metadata=("interrupt_bench", request.session, 1),
                )
            )
        if instances:
            turn = requests[0].turn + 1
            if self.cache is not None:  # the backend's writes go under this model's key
                self.lm.cache_hook = _KeyedCacheHook(self.hook, self.attr)
            try:
                outputs = self.lm.generate_until(instances)
            except Exception as exc:
                # The message names the cause; the whole chain goes to lm-eval's DEBUG log.
                log.debug("generate_until failed at turn %d", turn, exc_info=exc)
                raise SessionReplayError(
                    f"{type(self.lm).__name__} failed at turn {turn} with {len(instances)} "
                    f"requests ({type(exc).__name__}: {str(exc)[:300]}). Nothing was scored "
                    "or written; fix the model or server and run again (with --use_cache DB, "
                    "turns already generated are reused)"
                ) from None
            finally:
                if self.cache is not None:
                    self.lm.cache_hook = self.hook
            if len(outputs) != len(instances):
                raise SessionReplayError(
                    f"{type(self.lm).__name__}.generate_until returned {len(outputs)} outputs "
                    f"for {len(instances)} requests"
                )
            for i, out in zip(todo, outputs):
                results[i] = out
        turn_results = []
        for request, text in zip(requests, results):
            if not isinstance(text, str):
                raise SessionReplayError(
                    f"the model returned {type(text).__name__} instead of text for "
                    f"{request.episode.episode_id} turn {request.turn + 1}"
                )
            if self._group(request) is not None:
                text = truncate_tokens(self.lm, text, request.budget)
            turn_results.append(counted_result(self.lm, text, request.budget))
        return turn_results


def engine_unsupported(lm: Any, settings: Sequence[dict[str, Any]]) -> str | None:
    """Why these sessions cannot replay on the session engine (None: they can). The
    engine serves lm-eval's ``hf`` causal models under ``turn_batching: auto``."""
    modes = {s.get("turn_batching", "auto") for s in settings}
    for mode in modes:
        shares_budgets(mode)  # validates
    if modes != {"auto"}:
        return f"turn_batching {sorted(modes)}"
    from lm_eval.models.huggingface import HFLM

    if not isinstance(lm, HFLM) or getattr(lm, "backend", "causal") != "causal":
        return f"{type(lm).__name__} is not a local Hugging Face causal LM"
    if getattr(lm, "think_end_token", None) is not None:
        return "think_end_token is set"
    return None


class _EngineSession:
    """One session on the engine: turns become token ids of the exact prompt a
    ``generate_until`` call would get, results go back into the session's transcript.

    With ``--use_cache DB`` each greedy turn is stored under the key the per-request
    path uses (the two paths give the same text; :func:`cache_attr` names the model),
    and a turn found there is not generated again: a rerun after a crash resumes."""

    def __init__(
        self, lm: Any, run: SessionRun, settings: dict[str, Any], sent: dict, attr: str = ""
    ):
        self.lm, self.run, self.settings, self.sent = lm, run, settings, sent
        hook = getattr(lm, "cache_hook", None)
        self.hook = hook if getattr(hook, "dbdict", None) is not None else None
        self.attr = attr or (cache_attr(lm) if self.hook is not None else "generate_until")
        self.asked: tuple | None = None  # (prompt, kwargs) of the turn being generated

    def _greedy(self) -> bool:
        return not self.settings.get("generation_kwargs", {}).get("do_sample")

    def step(self, done: Generated | None) -> Ask | None:
        from lm_eval.api.model import hash_args

        if done is not None:
            self.run.record(TurnResult(done.text, done.cut, done.n_tokens))
            if self.hook is not None and self.asked is not None:
                self.hook.add_partial(self.attr, self.asked, done.text)
        while (request := self.run.next_request()) is not None:
            prompt = turn_prompt(self.lm, request, self.settings)
            self.sent[(request.session, request.turn)] = prompt
            self.asked = (prompt, turn_kwargs(self.settings, request.budget))
            key = None
            if self.hook is not None and self._greedy():
                key = hash_args(self.attr, self.asked)
            if key is None or key not in self.hook.dbdict:
                stops = tuple(stop_strings(self.settings))
                return Ask(self.lm.tok_encode(prompt), request.budget, stops)
            # cached: the cut is known only from re-encoding
            self.run.record(counted_result(self.lm, self.hook.dbdict[key], request.budget))
        return None


def check_generation_settings(settings: Sequence[dict[str, Any]], sampler: str | None) -> None:
    """Refuse generation kwargs that cannot be honoured, before any turn is generated
    (``ConfigError``, one line): on every path a value of the wrong type or out of range;
    where ``sampler`` (``"session engine"`` or ``"vLLM session backend"``) chooses the
    tokens, also what :meth:`Sampling.from_generation_kwargs` refuses, so a second group
    of settings cannot fail after the first has been generated."""
    for key in _generation_groups(settings):
        kwargs = json.loads(key)
        if sampler is None:
            check_sampling_values(kwargs)
            continue
        try:
            Sampling.from_generation_kwargs(kwargs)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("session engine", sampler)) from None


def eos_ids(lm: Any) -> set[int]:
    """Every id that ends a turn, as ``model.generate`` in lm-eval's ``hf`` path stops on
    them: the tokenizer's EOS and the generation config's (Gemma lists two)."""
    return set(turn_contract.eos_ids(lm.eot_token_id, model_config_eos(lm.model)))


def vllm_model(lm: Any) -> Any | None:
    """The ``vllm.LLM`` that ``lm`` generates with (lm-eval's ``vllm`` model or our
    ``interrupt-bench-vllm``), or None: vLLM is not imported, or ``lm`` holds no single
    engine (lm-eval's ``data_parallel_size > 1`` runs engines in workers)."""
    vllm = sys.modules.get("vllm")
    llm = getattr(lm, "model", None)
    if vllm is None or llm is None:
        return None
    return llm if isinstance(llm, vllm.LLM) else None


def _generation_groups(settings: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """Sessions by their generation settings: each group is one run of an engine."""
    groups: dict[str, list[int]] = {}
    for i, st in enumerate(settings):
        groups.setdefault(json.dumps(st.get("generation_kwargs", {}), sort_keys=True), []).append(i)
    return groups


def _turn_bar(lm: Any, episodes: list[Episode]):
    from tqdm import tqdm

    total = sum(sum(b > 0 for b in ep.turn_budgets()) for ep in episodes)
    return tqdm(total=total, desc="interrupt_bench turns", disable=getattr(lm, "rank", 0) != 0)


def replay_on_vllm(
    lm: Any, llm: Any, episodes: list[Episode], settings: list[dict[str, Any]]
) -> tuple[list[Transcript], dict, list]:
    """Replay on vLLM (:mod:`local_models.vllm_sessions`): one ``LLM.generate`` call per
    wave of turns, the prompts as the ids ``generate_until`` would send, the cut from
    each request's finish reason. Returns what :func:`replay_on_engine` returns."""
    import torch

    from local_models.vllm_sessions import eos_ids_of, run_on_vllm

    runs = [SessionRun(ep, i) for i, ep in enumerate(episodes)]
    sent: dict = {}
    attr = _cache_attr_when_caching(lm)
    bar = _turn_bar(lm, episodes)
    eos = eos_ids_of(llm)
    all_stats = []
    for key, members in _generation_groups(settings).items():
        try:
            sampling = Sampling.from_generation_kwargs(json.loads(key), seed=torch.initial_seed())
        except ValueError as exc:
            raise SessionReplayError(
                str(exc).replace("session engine", "vLLM session backend")
            ) from None
        drivers = [_EngineSession(lm, runs[i], settings[i], sent, attr) for i in members]
        try:
            stats = run_on_vllm(
                llm,
                drivers,
                sampling,
                decode=lambda ids: lm.tokenizer.decode(ids, skip_special_tokens=True),
                eos_ids=sorted(eos),
                lora_request=getattr(lm, "lora_request", None),
                max_length=lm.max_length,
                progress=bar.update,
            )
        except ValueError as exc:
            raise SessionReplayError(f"vLLM session backend: {exc}") from None
        except Exception as exc:  # the engine process died, or vLLM refused a request
            log.debug("vLLM failed", exc_info=exc)
            raise SessionReplayError(
                f"vLLM failed during the sessions ({type(exc).__name__}: {str(exc)[:300]}). "
                "Nothing was scored or written; fix the engine and run again (with "
                "--use_cache DB, turns already generated are reused)"
            ) from None
        all_stats.append(stats)
        log.info(
            "interrupt_bench vLLM: %d sessions, %d tokens generated, %d prompt tokens "
            "computed, %d served from the prefix cache, %d generate calls (%.1f s)",
            len(members), stats.generated_tokens, stats.prefilled_tokens,
            stats.reused_tokens, stats.forward_passes, stats.decode_seconds,
        )  # fmt: skip
    bar.close()
    return [run.transcript for run in runs], sent, all_stats


def replay_on_engine(
    lm: Any, episodes: list[Episode], settings: list[dict[str, Any]]
) -> tuple[list[Transcript], dict, list]:
    """Replay on the session engine: one engine run per set of generation settings.
    Returns the transcripts, the prompts sent, and each run's ``EngineStats``."""
    import torch

    from local_models.engine import SessionEngine

    runs = [SessionRun(ep, i) for i, ep in enumerate(episodes)]
    sent: dict = {}
    attr = _cache_attr_when_caching(lm)
    groups = _generation_groups(settings)
    batch = lm.batch_size if isinstance(lm.batch_size, int) else 32
    bar = _turn_bar(lm, episodes)
    all_stats = []
    for key, members in groups.items():
        sampling = Sampling.from_generation_kwargs(json.loads(key), seed=torch.initial_seed())
        engine = SessionEngine(
            lm.model,
            lambda ids: lm.tok_decode(ids),
            eos_ids=sorted(eos_ids(lm)),
            batch_size=batch,
            sampling=sampling,
            max_length=lm.max_length,
            max_cache_gb=settings[members[0]].get("max_cache_gb"),
            progress=bar.update,
        )
        drivers = [_EngineSession(lm, runs[i], settings[i], sent, attr) for i in members]
        try:
            stats = engine.run(drivers)
        except MemoryError as exc:  # the KV bound, a setting: one line, as any bad setting
            bar.close()  # before the error line, which stays the last
            raise ConfigError(f"session engine: {exc}") from None
        except (ValueError, NotImplementedError) as exc:
            bar.close()
            raise SessionReplayError(f"session engine: {exc}") from None
        all_stats.append(stats)
        log.info(
            "interrupt_bench engine: %d sessions, %d tokens generated, %d prefilled, %d "
            "reused from caches, %d forward passes (%d prefill: %.1f s, decode: %.1f s), up "
            "to %d rows",
            len(members), stats.generated_tokens, stats.prefilled_tokens,
            stats.reused_tokens, stats.forward_passes, stats.prefill_passes,
            stats.prefill_seconds, stats.decode_seconds, stats.max_rows,
        )  # fmt: skip
    bar.close()
    return [run.transcript for run in runs], sent, all_stats


def _transcript_record(transcript: Transcript, prompts_sent: dict, session: int) -> dict:
    record = transcript.to_dict()
    for turn in record["turns"]:
        turn["prompt"] = prompts_sent.get((session, turn["turn"] - 1))
    record["outputs"] = list(transcript.outputs)
    record["cut"] = list(transcript.cut)
    record["budgets"] = transcript.episode.turn_budgets()
    record["row"] = transcript.episode.to_row()
    return record


def interrupt_session(self: Any, requests: list[Any]) -> list[str]:
    """``LM.interrupt_session``: replay every requested episode; one result per request
    (lm-eval pads ranks by repeating Instances, so repeats share one replay).

    Each result is JSON text ``{"sessions": [transcript, …]}`` (one session, one per
    task for the single-task control, both and the nocut one for the paired controls;
    each names its ``condition``): lm-eval logs responses as strings, so JSON keeps
    the ``--log_samples`` transcripts machine-readable."""
    unique: dict[int, Any] = {}
    for req in requests:
        unique.setdefault(id(req), req)
    episodes: list[Episode] = []
    settings: list[dict[str, Any]] = []
    owner: list[int] = []  # request id per session
    conditions: list[str] = []  # the condition each session is played under
    for req in unique.values():
        row_json, req_settings = req.args
        episode = Episode.from_row(json.loads(row_json))
        cap = check_budget_cap(req_settings.get("budget_cap", CONTROL_BUDGET))
        condition = req_settings.get("condition", "interrupted")
        for label, session in labelled_sessions(episode, condition, cap):
            conditions.append(label)
            episodes.append(session)
            settings.append(req_settings)
            owner.append(id(req))
    n_turns = max((e.n_turns for e in episodes), default=0)
    why_not = engine_unsupported(self, settings)
    llm = (
        vllm_model(self) if {s.get("turn_batching", "auto") for s in settings} == {"auto"} else None
    )
    sampler = "vLLM session backend" if llm is not None else None
    check_generation_settings(settings, sampler or ("session engine" if why_not is None else None))
    if llm is not None:
        log.info("interrupt_bench: %d sessions on vLLM", len(episodes))
        transcripts, sent, _ = replay_on_vllm(self, llm, episodes, settings)
    elif why_not is None:
        log.info("interrupt_bench: %d sessions on the session engine", len(episodes))
        transcripts, sent, _ = replay_on_engine(self, episodes, settings)
    else:
        log.info(
            "interrupt_bench: replaying %d sessions over %d turns through generate_until (%s)",
            len(episodes), n_turns, why_not,
        )  # fmt: skip
        responder = _Responder(self, settings)

        def on_turn(turn: int, total: int) -> None:
            log.info("interrupt_bench: turn %d/%d done", turn, total)

        transcripts = replay(episodes, responder, on_turn=on_turn)
        sent = responder.prompts
    by_request: dict[int, list[dict]] = {rid: [] for rid in unique}
    for i, (rid, transcript) in enumerate(zip(owner, transcripts)):
        by_request[rid].append(
            {"condition": conditions[i], **_transcript_record(transcript, sent, i)}
        )
    return [json.dumps({"sessions": by_request[id(req)]}, ensure_ascii=False) for req in requests]
