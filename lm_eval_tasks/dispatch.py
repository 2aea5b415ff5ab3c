"""Multi-turn generation for lm-evaluation-harness, without a fork.

lm-eval sends a task's Instances to ``getattr(lm, instance.request_type)``. The task pack
emits Instances of its own type, ``interrupt_session``, and :func:`install` gives every
``lm_eval.api.model.LM`` a method of that name, :func:`interrupt_session`, which picks
where the sessions are played:

- on lm-eval's ``hf`` model, the session engine (:class:`lm_eval_tasks.backends.
  EngineBackend`: per-session KV caches, continuous batching, cut on the generated ids);
- on a model that holds a ``vllm.LLM`` (lm-eval's ``vllm``, or ``interrupt-bench-vllm``),
  that engine through the same drivers (:class:`lm_eval_tasks.vllm_backend.VllmBackend`);
- on every other backend (or with ``turn_batching`` exact or shared), turn by turn
  through ``generate_until`` (:class:`lm_eval_tasks.responder.GenerateUntilResponder`).

Budget-0 turns skip the model. The cut text stays in the conversation and the next
question follows. ``args`` of an Instance: ``(episode row as JSON, settings)``, the
settings as :meth:`lm_eval_tasks.settings.RunSettings.to_args` writes them."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from interrupt_bench.controls import labelled_sessions
from interrupt_bench.episodes import Episode
from interrupt_bench.errors import InterruptBenchError
from interrupt_bench.records import session_record
from interrupt_bench.session import replay
from lm_eval_tasks.backends import (
    EngineBackend,
    SessionBackend,
    check_generation_settings,
    engine_unsupported,
    replay_sessions,
)
from lm_eval_tasks.responder import GenerateUntilResponder
from lm_eval_tasks.settings import RunSettings
from lm_eval_tasks.vllm_backend import VllmBackend, vllm_model

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


def request_args(episode_row: dict[str, Any], settings: RunSettings) -> tuple[str, dict]:
    """The Instance arguments for one episode: JSON text first (lm-eval hashes it)."""
    return json.dumps(episode_row, ensure_ascii=False, sort_keys=True), settings.to_args()


def session_backend(lm: Any, settings: list[RunSettings]) -> SessionBackend | str:
    """Where these sessions play: vLLM or the session engine, or (text) why neither, so
    they go through ``generate_until``. Refuses generation kwargs the chosen sampler
    cannot honour before any turn is generated."""
    why_not = engine_unsupported(lm, settings)
    llm = vllm_model(lm) if {s.turn_batching for s in settings} == {"auto"} else None
    backend: SessionBackend | str
    if llm is not None:
        backend = VllmBackend(lm, llm)
    else:
        backend = EngineBackend(lm) if why_not is None else why_not
    check_generation_settings(settings, None if isinstance(backend, str) else backend.name)
    return backend


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
    settings: list[RunSettings] = []
    owner: list[int] = []  # request id per session
    conditions: list[str] = []  # the condition each session is played under
    for req in unique.values():
        row_json, args = req.args
        episode = Episode.from_row(json.loads(row_json))
        req_settings = RunSettings.from_args(args)
        for label, session in labelled_sessions(episode, req_settings.condition,
                                                 req_settings.budget_cap):  # fmt: skip
            conditions.append(label)
            episodes.append(session)
            settings.append(req_settings)
            owner.append(id(req))
    backend = session_backend(self, settings)
    if isinstance(backend, str):
        n_turns = max((e.n_turns for e in episodes), default=0)
        log.info(
            "interrupt_bench: replaying %d sessions over %d turns through generate_until (%s)",
            len(episodes), n_turns, backend,
        )  # fmt: skip
        responder = GenerateUntilResponder(self, settings)

        def on_turn(turn: int, total: int) -> None:
            log.info("interrupt_bench: turn %d/%d done", turn, total)

        transcripts = replay(episodes, responder, on_turn=on_turn)
        sent = responder.prompts
    else:
        log.info("interrupt_bench: %d sessions on the %s", len(episodes), backend.name)
        played = replay_sessions(backend, episodes, settings)
        transcripts, sent = played.transcripts, played.prompts
    prompts: list[dict[int, str]] = [{} for _ in episodes]  # per session: turn -> prompt
    for (session, turn), prompt in sent.items():
        prompts[session][turn] = prompt
    by_request: dict[int, list[dict]] = {rid: [] for rid in unique}
    for i, (rid, transcript) in enumerate(zip(owner, transcripts)):
        by_request[rid].append(session_record(conditions[i], transcript, prompts[i]))
    return [json.dumps({"sessions": by_request[id(req)]}, ensure_ascii=False) for req in requests]
