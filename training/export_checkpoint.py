"""One checkpoint of a run (``OUTPUT_DIR/checkpoints/step-N``) as a peft adapter
directory, the form ``lm_eval --model_args peft=DIR`` and vLLM's ``lora_local_path=``
load. A run leaves its last adapter in its output_dir and its best by validation reward
in ``best/``; this is for the checkpoints between, so that the one to ship is chosen on
the validation split (``SPLIT=validation bash training/before_after.sh``).

    python -m training.export_checkpoint out/run15/checkpoints/step-0000075 out/run15-step75

The checkpoint's ``model.safetensors`` holds the whole peft model (accelerate's
``save_state``); the adapter is its LoRA tensors under peft's saved names, checked
against the run's own adapter (its last or ``best/``): the same names and shapes."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ADAPTER_NAME = "default"  # the adapter name training/policy.py's get_peft_model gives


def saved_name(key: str) -> str:
    """A peft model's state-dict key as peft saves it: without the adapter's name
    (``...q_proj.lora_A.default.weight`` -> ``...q_proj.lora_A.weight``)."""
    return key.replace(f".{ADAPTER_NAME}.", ".")


def export(checkpoint: Path, dest: Path) -> Path:
    """Write ``checkpoint``'s adapter to ``dest`` (``adapter_model.safetensors``,
    ``adapter_config.json`` and a ``checkpoint.json`` naming where it came from)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    weights = checkpoint / "model.safetensors"
    run = checkpoint.parent.parent
    # The run's own adapter: the last (written when it ends) or the best (from step 0 on
    # where it validates); either gives the names, shapes and adapter_config.json.
    found = [d for d in (run, run / "best") if (d / "adapter_model.safetensors").is_file()]
    reference = (found[0] if found else run) / "adapter_model.safetensors"
    if not weights.is_file():
        raise SystemExit(
            f"{weights} does not exist: pass a checkpoint folder of a training/reinforce.py "
            "run (OUTPUT_DIR/checkpoints/step-N)"
        )
    if not reference.is_file():
        raise SystemExit(
            f"neither {run} nor {run / 'best'} holds an adapter_model.safetensors to give the "
            "adapter's shape: is the run's output_dir complete?"
        )
    with safe_open(str(weights), "pt") as f:
        names = [k for k in f.keys() if ".lora_" in k]  # noqa: SIM118 (safe_open has no __iter__)
        tensors = {saved_name(k): f.get_tensor(k) for k in names}
    with safe_open(str(reference), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != shapes:
        missing, extra = sorted(set(shapes) - set(got)), sorted(set(got) - set(shapes))
        raise SystemExit(
            f"{weights} does not hold {reference}'s adapter: {len(missing)} tensor(s) missing "
            f"(e.g. {missing[:1]}), {len(extra)} unexpected (e.g. {extra[:1]}), or shapes "
            "differ; is it a checkpoint of this run?"
        )
    dest.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(dest / "adapter_model.safetensors"), metadata={"format": "pt"})
    shutil.copy2(reference.parent / "adapter_config.json", dest / "adapter_config.json")
    step = json.loads((checkpoint / "trainer_state.json").read_text())["step"]
    record = {"run": str(run), "checkpoint": str(checkpoint), "step": step}
    (dest / "checkpoint.json").write_text(json.dumps(record) + "\n")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="OUTPUT_DIR/checkpoints/step-N")
    parser.add_argument("dest", type=Path, help="the adapter directory to write")
    args = parser.parse_args(argv)
    print(export(args.checkpoint, args.dest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
