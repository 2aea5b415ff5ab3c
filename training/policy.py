"""The policy: the base model with a LoRA adapter, and sessions sampled from it.

Both the training loop (rollouts, greedy validation) and ``training/inspect_reattempts.py``
sample through :func:`sample_transcripts`, so what is inspected is what is trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interrupt_bench.episodes import Episode
from interrupt_bench.errors import ConfigError
from interrupt_bench.session import Transcript
from training.config import TrainConfig
from training.rollouts import Rollouts, sample_sessions


def load_model(cfg: TrainConfig) -> tuple[Any, Any]:
    """The tokenizer and the base model wrapped with a fresh LoRA adapter (the only
    trainable weights); a model that cannot load or lacks the chat template ``chat``
    needs is a :class:`ConfigError` naming the flag."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.model_name_or_path)
        base = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load model {cfg.model_name_or_path!r} ({str(exc).splitlines()[0]}); pass a "
            "local Hugging Face model directory or a Hub id you can download"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.chat and not tokenizer.chat_template:
        raise ConfigError(f"{cfg.model_name_or_path} has no chat template; pass --chat false")
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    if cfg.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()  # LoRA: the frozen embeddings give no grad otherwise
    model = get_peft_model(base, lora)
    if cfg.init_adapter:
        load_init_adapter(model, cfg)
    return tokenizer, model


def load_init_adapter(model: Any, cfg: TrainConfig) -> None:
    """``cfg.init_adapter``'s LoRA weights in place of the fresh ones, so that a run goes on
    from an adapter that another run trained (one whose checkpoints are gone, or a shipped
    one). Its shape must be the config's: a different rank, alpha or set of modules is
    another adapter, and a :class:`ConfigError` names the flag to change."""
    import json
    from pathlib import Path

    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(cfg.init_adapter)
    config_file, weights = path / "adapter_config.json", path / "adapter_model.safetensors"
    if not (config_file.is_file() and weights.is_file()):
        raise ConfigError(
            f"--init_adapter {path}: no adapter_config.json and adapter_model.safetensors "
            "there; pass a peft adapter directory (a run's output_dir or best/, or "
            "training/adapters/...)"
        )
    saved = json.loads(config_file.read_text())
    wanted = {
        "r": ("lora_r", cfg.lora_r),
        "lora_alpha": ("lora_alpha", cfg.lora_alpha),
        "target_modules": ("lora_target_modules", sorted(cfg.lora_target_modules)),
    }
    for key, (flag, value) in wanted.items():
        have = saved.get(key)
        have = sorted(have) if isinstance(have, list) else have
        if have != value:
            raise ConfigError(
                f"--init_adapter {path} has {key} {have}, the config {flag} {value}; "
                f"set --{flag} to the adapter's"
            )
    result = set_peft_model_state_dict(model, load_file(str(weights)))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"--init_adapter {path} does not fit {cfg.model_name_or_path}: "
            f"{len(missing)} LoRA weight(s) missing (e.g. {missing[:1]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:1]}); "
            "pass an adapter trained on this base model"
        )


def sample_transcripts(
    model: Any,
    tokenizer: Any,
    episodes: Sequence[Episode],
    cfg: TrainConfig,
    greedy: bool = False,
    seed: int = 0,
    shots: Sequence[list[dict[str, str]]] = (),
    vllm: Any = None,
    closing_branches: int = 0,
) -> tuple[list[Transcript], Rollouts]:
    """Sample one session per episode on the session engine (or on ``vllm`` with the
    model's current adapter), after the demonstration sessions ``shots``; returns
    transcripts and the rollouts (token records per session, engine figures);
    ``closing_branches=K``: K closing turns per episode after one greedy history
    (:func:`training.rollouts.sample_sessions`). The model
    samples in eval mode (no dropout) and goes back to the mode it was in."""
    was_training = model.training
    model.eval()
    if vllm is not None:
        vllm.load_adapter(model)
    rollouts = sample_sessions(
        model, tokenizer, episodes, chat=cfg.chat, temperature=cfg.temperature,
        greedy=greedy, seed=seed, shots=shots, vllm=vllm, closing_branches=closing_branches,
    )  # fmt: skip
    model.train(was_training)
    return rollouts.transcripts, rollouts
