"""vLLM as a session backend (:class:`lm_eval_tasks.backends.SessionBackend`): the
``vllm.LLM`` of lm-eval's ``vllm`` model or of ``interrupt-bench-vllm`` driven through
:func:`local_models.vllm_sessions.run_on_vllm`, one ``LLM.generate`` call per wave of
turns, the prompts as the ids ``generate_until`` would send, the cut from each
request's finish reason. Importing it needs no vLLM."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from lm_eval_tasks.settings import RunSettings
from local_models.engine import Driver, EngineStats, Sampling

NAME = "vLLM session backend"


def vllm_model(lm: Any) -> Any | None:
    """The ``vllm.LLM`` that ``lm`` generates with (lm-eval's ``vllm`` model or our
    ``interrupt-bench-vllm``), or None: vLLM is not imported, or ``lm`` holds no single
    engine (lm-eval's ``data_parallel_size > 1`` runs engines in workers)."""
    vllm = sys.modules.get("vllm")
    llm = getattr(lm, "model", None)
    if vllm is None or llm is None:
        return None
    return llm if isinstance(llm, vllm.LLM) else None


class VllmBackend:
    """The ``vllm.LLM`` ``llm`` that the lm-eval model ``lm`` holds. Its engine runs in
    other processes, so any failure but a refused request is that engine dying."""

    name = NAME
    refusals = (ValueError,)
    setting_errors = ()
    crash_subject = "vLLM"

    def __init__(self, lm: Any, llm: Any):
        self.lm, self.llm = lm, llm

    def run(
        self,
        drivers: Sequence[Driver],
        sampling: Sampling,
        settings: RunSettings,
        progress: Callable[[int], None],
    ) -> EngineStats:
        from local_models.vllm_sessions import eos_ids_of, run_on_vllm

        lm = self.lm
        return run_on_vllm(
            self.llm,
            drivers,
            sampling,
            decode=lambda ids: lm.tokenizer.decode(ids, skip_special_tokens=True),
            eos_ids=sorted(eos_ids_of(self.llm)),
            lora_request=getattr(lm, "lora_request", None),
            max_length=lm.max_length,
            progress=progress,
        )

    def summary(self, sessions: int, stats: EngineStats) -> str:
        return (
            f"vLLM: {sessions} sessions, {stats.generated_tokens} tokens generated, "
            f"{stats.prefilled_tokens} prompt tokens computed, {stats.reused_tokens} served "
            f"from the prefix cache, {stats.forward_passes} generate calls "
            f"({stats.decode_seconds:.1f} s)"
        )
