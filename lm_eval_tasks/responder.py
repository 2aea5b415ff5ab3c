"""Every backend but the session engine and vLLM: sessions replayed turn by turn
through the one method every lm-eval model implements, ``generate_until``. At turn t
the requests of every session still running go out in a single call, each with
``max_gen_toks`` set to that turn's budget (tokens of the evaluated model), so lm-eval's
own batching, progress bar and response cache apply; under ``turn_batching: shared``
they share the largest budget and are cut to their own afterwards."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from interrupt_bench.session import TurnRequest, TurnResult
from lm_eval_tasks.cache_identity import KeyedCacheHook, cache_attr
from lm_eval_tasks.settings import RunSettings
from lm_eval_tasks.turns import SessionReplayError, text_result, truncate_tokens, turn_prompt

log = logging.getLogger("interrupt_bench")


class GenerateUntilResponder:
    """Answers one turn of many sessions with one ``generate_until`` call (a responder of
    :func:`interrupt_bench.session.replay`)."""

    def __init__(self, lm: Any, settings: Sequence[RunSettings]):
        self.lm = lm
        self.settings = settings  # per session
        self.prompts: dict[tuple[int, int], str] = {}  # (session, turn) -> prompt sent
        self.hook = getattr(lm, "cache_hook", None)
        self.cache = getattr(self.hook, "dbdict", None)  # set by --use_cache
        self.attr = cache_attr(lm) if self.cache is not None else "generate_until"

    def _group(self, request: TurnRequest) -> str | None:
        """Requests that may share one ``max_gen_toks``; None: this one keeps its own."""
        settings = self.settings[request.session]
        return settings.generation_key if settings.shares_budgets else None

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
            gen_kwargs = settings.turn_kwargs(shared_max.get(self._group(request), request.budget))
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
                self.lm.cache_hook = KeyedCacheHook(self.hook, self.attr)
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
            turn_results.append(text_result(self.lm, text, request.budget))
        return turn_results
