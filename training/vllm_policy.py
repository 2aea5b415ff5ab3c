"""Rollouts on vLLM (``rollout_backend: vllm``): a vLLM engine beside the trained model
samples every session with the current LoRA adapter.

After every optimizer step the adapter is written (peft's ``save_pretrained``, a few
MB) and handed to vLLM as a new ``LoRARequest``: vLLM applies it on top of the base
weights it loaded once, so nothing is merged and the base model is never copied again.
vLLM returns each sampled id's log-probability after temperature
(``logprobs_mode="processed_logprobs"``), the sampler's, as the session engine does;
the loss is computed by the peft model as on the engine, and the first-step check
compares the two.

Memory: vLLM holds a second copy of the base weights and its KV cache, bounded by
``vllm_memory_utilization`` (a fraction of the accelerator's memory; on the CPU, of the
NUMA node's); the trained model, its optimizer state and activations need the rest."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from local_models.engine import Sampling
from local_models.vllm_sessions import eos_ids_of, prepare_vllm, run_on_vllm


class VllmPolicy:
    """A vLLM engine on the base model and the adapter of the latest step."""

    def __init__(self, base: str, *, dtype: str, lora_rank: int, memory_utilization: float,
                 enforce_eager: bool, seed: int, adapter_dir: Path):  # fmt: skip
        from vllm import LLM

        prepare_vllm()
        self.llm = LLM(
            model=base,
            dtype=dtype,
            enable_lora=True,
            max_loras=1,
            max_lora_rank=lora_rank,
            logprobs_mode="processed_logprobs",
            enable_prefix_caching=True,
            gpu_memory_utilization=memory_utilization,
            enforce_eager=enforce_eager,
            seed=seed,
        )
        self.eos = sorted(eos_ids_of(self.llm))
        self.adapter_dir = adapter_dir
        self.request: Any = None
        self.version = 0

    def load_adapter(self, model: Any) -> None:
        """Write ``model``'s adapter and sample with it from now on (a new LoRA id each
        time, so vLLM loads it instead of serving the previous one from its cache)."""
        from vllm.lora.request import LoRARequest

        self.version += 1
        where = self.adapter_dir / f"v{self.version}"
        model.save_pretrained(where)
        self.request = LoRARequest(f"policy-v{self.version}", self.version, str(where))
        old = self.adapter_dir / f"v{self.version - 2}"  # the one before is still in use
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)

    def run(self, drivers: Sequence[Any], tokenizer: Any, greedy: bool, temperature: float,
            seed: int):  # fmt: skip
        sampling = Sampling(greedy=greedy, temperature=temperature, seed=seed)
        return run_on_vllm(
            self.llm,
            drivers,
            sampling,
            decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
            eos_ids=self.eos,
            lora_request=self.request,
            logprobs=not greedy,
            max_length=self.llm.llm_engine.model_config.max_model_len,
        )
