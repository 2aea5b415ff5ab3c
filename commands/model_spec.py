"""``--model``: one row of a table as the user writes it (a model name, directory or Hub id,
then lm-eval model args and our own keys), checked without loading anything, then parsed
into a :class:`ModelSpec` whose identity says what changes its numbers."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from commands.errors import UsageError
from interrupt_bench.demonstrations import PLACEMENTS
from local_models.hardware import DTYPES

OUR_KEYS = ("num_fewshot", "chat", "placement")  # read here, not passed to lm-eval's model
BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
# A Hub model id: NAME or OWNER/NAME, nothing that reads as a file system path.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
MODEL_FORM = "a model name, directory or Hub id, then KEY=VALUE pairs"


@dataclass(frozen=True)
class ModelSpec:
    """One row: a model (registry name, directory or Hub id; ``peft=`` for an adapter) and
    how it takes the benchmark (shots, chat template or plain)."""

    model_args: str
    name: str
    num_fewshot: int | None = None  # None: the task's default
    chat: bool = True
    placement: str | None = None  # demonstrations: turns / system (None: lm-eval's default)

    @property
    def label(self) -> str:
        shots = "" if self.num_fewshot is None else f", {self.num_fewshot}-shot"
        mode = "" if self.chat else ", plain"
        where = f", demos in {self.placement}" if self.placement and self.num_fewshot else ""
        return f"{self.name}{shots}{mode}{where}"

    @property
    def args(self) -> dict[str, str]:
        """lm-eval's model args as a dict (``model_args`` is their comma-joined form)."""
        return dict(part.split("=", 1) for part in self.model_args.split(","))

    def identity(self) -> dict:
        """Everything about the model that changes its numbers: every model arg (dtype,
        adapter path included) and a stamp of the weights in each local directory, so a
        retrained adapter saved under the same name is not taken for the old one."""
        stamps = {k: _dir_stamp(Path(v)) for k, v in self.args.items()
                  if k in ("pretrained", "peft") and Path(v).is_dir()}  # fmt: skip
        return {
            "model_args": self.model_args,
            "weights": stamps,
            "num_fewshot": self.num_fewshot,
            "chat": self.chat,
            "placement": self.placement,
        }


def _dir_stamp(directory: Path) -> str:
    """Names, sizes and modification times of a model directory's files: changes whenever
    the weights or the tokenizer are rewritten, costs no read of the weights."""
    entries = sorted(
        (f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in directory.iterdir() if f.is_file()
    )
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def digest(identity: dict) -> str:
    """A short name for an identity (a row's samples file, a duplicate check)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def check_distinct(specs: list[ModelSpec]) -> None:
    """Refuse one model given twice with the same settings: its two rows would be one."""
    seen: set[str] = set()
    for spec in specs:
        if digest(spec.identity()) in seen:
            raise UsageError(
                f"--model {spec.model_args} ({spec.label}) is given twice with the same "
                "settings; give it once"
            )
        seen.add(digest(spec.identity()))


def row_labels(specs: list[ModelSpec]) -> list[str]:
    """One distinct label per row: rows that share a label (two dtypes of one model, two
    adapters saved as ``best``) get the settings that tell them apart appended, so no row
    overwrites another in the table or its JSON."""
    settings = [
        {**spec.args, "num_fewshot": spec.num_fewshot, "chat": spec.chat,
         "placement": spec.placement}
        for spec in specs
    ]  # fmt: skip
    labels = []
    for spec, mine in zip(specs, settings):
        twins = [theirs for other, theirs in zip(specs, settings) if other.label == spec.label]
        keys = dict.fromkeys(k for theirs in twins for k in theirs)
        differ = [k for k in keys if any(theirs.get(k) != mine.get(k) for theirs in twins)]
        extra = ", ".join(f"{k}={mine.get(k, '-')}" for k in differ)
        labels.append(f"{spec.label} ({extra})" if differ else spec.label)
    return labels


def parse_model(text: str) -> ModelSpec:
    """``--model`` is a model name (``interrupt-bench-models list``), directory
    or Hub id, optionally followed by lm-eval model args and our own keys, for example
    ``smollm2-135m-instruct,num_fewshot=0``, ``gemma-3-270m,chat=false`` or
    ``pretrained=DIR,peft=ADAPTER``. ``dtype`` defaults to bfloat16 where the hardware
    has it, float32 otherwise."""
    from local_models.hardware import best_dtype
    from local_models.registry import MODELS, has_chat_template, model_path

    args, shots, chat, placement = check_model_text(text)
    given = args["pretrained"]
    if given in MODELS or Path(given).is_dir():  # absolute: one model, one row identity
        args["pretrained"] = os.path.abspath(model_path(given))
    if "peft" in args and Path(args["peft"]).is_dir():
        args["peft"] = os.path.abspath(args["peft"])
    args.setdefault("dtype", best_dtype())
    chat_ok = has_chat_template(args["pretrained"]) if chat is None else chat
    name = Path(args.get("peft") or given).name + (" + LoRA" if "peft" in args else "")
    return ModelSpec(
        model_args=",".join(f"{k}={v}" for k, v in args.items()),
        name=name,
        num_fewshot=shots,
        chat=chat_ok,
        placement=placement,
    )


def check_model_text(text: str) -> tuple[dict[str, str], int | None, bool | None, str | None]:
    """``--model``'s text checked without loading anything: lm-eval's model args (each key
    once, a known dtype), and our own keys as values (shots, chat, placement; None where
    not given)."""
    args = split_model_args(text)
    ours = {k: args.pop(k) for k in OUR_KEYS if k in args}
    shots = _fewshot(text, ours.get("num_fewshot"))
    chat = ours.get("chat")
    if chat is not None and chat.lower() not in BOOLEANS:
        raise UsageError(f"--model {text!r}: chat={chat} is not a boolean; use chat=true or false")
    placement = ours.get("placement")
    if placement is not None and placement not in ("auto", *PLACEMENTS):
        raise UsageError(
            f"--model {text!r}: placement={placement} is not one of auto, {', '.join(PLACEMENTS)}"
        )
    if args.get("dtype", "auto") not in DTYPES:
        raise UsageError(
            f"--model {text!r}: dtype={args['dtype']} is not one of {', '.join(DTYPES)}"
        )
    return args, shots, None if chat is None else BOOLEANS[chat.lower()], placement


def split_model_args(text: str) -> dict[str, str]:
    """``--model``'s text as KEY=VALUE pairs (a leading bare model becomes ``pretrained``),
    each key once: lm-eval would otherwise fail on a stray word deep in its model
    constructor, or a repeated key would silently win over the first."""
    parts = [part.strip() for part in text.split(",")]
    if parts and parts[0] and "=" not in parts[0]:
        parts[0] = f"pretrained={parts[0]}"
    args: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not (sep and key and value):
            raise UsageError(
                f"--model {text!r}: {part!r} is not KEY=VALUE; write {MODEL_FORM}, "
                "e.g. pretrained=DIR,peft=ADAPTER,num_fewshot=0"
            )
        if key in args:
            raise UsageError(f"--model {text!r}: {key} is given twice; keep one")
        args[key] = value
    if "pretrained" not in args:
        raise UsageError(f"--model {text!r} names no model; write {MODEL_FORM}")
    return args


def _fewshot(text: str, value: str | None) -> int | None:
    """``num_fewshot`` as a count of demonstrations: a whole number, zero or more."""
    if value is None:
        return None
    try:
        shots = int(value)
    except ValueError:
        shots = -1
    if shots < 0:
        raise UsageError(f"--model {text!r}: num_fewshot={value} is not a count; use 0 or more")
    return shots


def check_reachable(text: str) -> None:
    """Refuse, before the dataset build, torch and lm-eval, a ``--model`` whose model or
    adapter cannot be loaded: a path that does not exist, or a Hub id that is not cached
    while the Hub is offline. lm-eval would fail on it only after every earlier row ran."""
    import huggingface_hub
    from huggingface_hub import constants

    from local_models.registry import MODELS

    for key, value in split_model_args(text).items():
        if key not in ("pretrained", "peft") or value in MODELS or Path(value).is_dir():
            continue
        what = "model" if key == "pretrained" else "adapter"
        if not HUB_ID.match(value):
            raise UsageError(
                f"{key}={value}: no such {what} directory; pass an existing "
                "directory, a name from `interrupt-bench-models list` or a Hub id"
            )
        cached = huggingface_hub.try_to_load_from_cache(
            value, "adapter_config.json" if key == "peft" else "config.json"
        )
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "true", "yes")
        if (offline or constants.HF_HUB_OFFLINE) and not isinstance(cached, str):
            raise UsageError(
                f"{key}={value}: not a {what} directory here, nor a Hub {what} in the "
                "local cache, and HF_HUB_OFFLINE is set; pass a directory, or "
                "download it once with the Hub online"
            )


def fewshot_specs(model: str) -> list[ModelSpec]:
    """The rows of the few-shot grid: 0–3 shots, the demonstrations as chat turns or
    inside the system prompt."""
    specs = [parse_model(f"{model},num_fewshot=0")]
    for k in (1, 2, 3):
        for placement in ("turns", "system"):
            specs.append(parse_model(f"{model},num_fewshot={k},placement={placement}"))
    return specs
