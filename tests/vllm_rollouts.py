"""Greedy training rollouts on vLLM (``rollout_backend: vllm``), written to OUT as one
JSON list of sessions (a file: vLLM's engine logs to stdout as it shuts down). A
subprocess of ``tests/test_vllm.py``: vLLM spawns engine processes, and a spawned process
re-imports its parent's main script, which must not be pytest's.

    python tests/vllm_rollouts.py MODEL DATASET CONFIG SPLIT EPISODES OUT"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import local_models  # noqa: F401  (first: hides torch extensions that cannot load here)


def main(model_dir: str, dataset: str, config: str, split: str, episodes: str, out: str) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from interrupt_bench import demonstrations
    from interrupt_bench.dataset import load_episodes
    from training.rollouts import sample_sessions
    from training.vllm_policy import VllmPolicy

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    # A fresh adapter (B = 0) is the base model: its turns are the base model's.
    model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    shots = demonstrations.as_sessions(
        demonstrations.from_dataset(dataset, config, demonstrations.DEFAULT_SHOTS)
    )
    with tempfile.TemporaryDirectory() as adapters:
        policy = VllmPolicy(model_dir, dtype="float32", lora_rank=8, memory_utilization=0.3,
                            enforce_eager=True, seed=0, adapter_dir=Path(adapters))  # fmt: skip
        policy.load_adapter(model)
        rollouts = sample_sessions(
            model, tokenizer, load_episodes(dataset, config, split, limit=int(episodes)),
            chat=False, greedy=True, shots=shots, vllm=policy,
        )  # fmt: skip
    Path(out).write_text(json.dumps([
        {"episode_id": t.episode.episode_id, "outputs": list(t.outputs), "cut": list(t.cut)}
        for t in rollouts.transcripts
    ]))  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:])
