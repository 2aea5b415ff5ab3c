"""Where does a policy's re-attempting go? Replays validation episodes with a model (and
optionally a LoRA adapter from ``training/reinforce.py``) through the training rollout
engine and splits its tags naming earlier tasks into *open* (coming back to a task with no
closed answer yet), *finished* (repeating an answered one) and *not asked*.

The benchmark's re-attempt count adds the first two together, so a reward that pays for
re-attempts can rise by repeating finished tasks; this is the check that tells them apart.

    python training/inspect_reattempts.py --model MODEL_DIR [--adapter OUT_DIR] \\
        [--dataset_path build/interrupt_bench] [--episodes 64] [--samples 4]
"""

from __future__ import annotations

import argparse
import json

from interrupt_bench import demonstrations
from interrupt_bench.dataset import load_episodes
from interrupt_bench.scoring import REATTEMPT_KINDS, aggregate, reattempt_kinds
from training.config import TrainConfig
from training.policy import sample_transcripts


def inspect(
    model_path: str,
    adapter: str | None,
    dataset_path: str,
    config: str = "default",
    split: str = "validation",
    episodes: int = 64,
    samples: int = 0,
    seed: int = 0,
    num_fewshot: int = demonstrations.DEFAULT_SHOTS,
) -> dict[str, float]:
    """Per-episode means of the re-attempt kinds, with the benchmark's own metrics beside
    them. ``samples=0`` decodes greedily (as lm-eval does); ``samples=K`` draws K sessions
    per episode at temperature 1 (as REINFORCE's rollouts do)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    eps = load_episodes(dataset_path, config, split, limit=episodes)
    repeats = max(samples, 1)
    cfg = TrainConfig(model_name_or_path=model_path, chat=bool(tokenizer.chat_template))
    shots = demonstrations.from_dataset(dataset_path, config, num_fewshot)
    shots = demonstrations.as_sessions(shots)
    transcripts, _ = sample_transcripts(
        model, tokenizer, [e for e in eps for _ in range(repeats)], cfg, greedy=samples == 0,
        seed=seed, shots=shots,
    )  # fmt: skip
    totals = dict.fromkeys(REATTEMPT_KINDS, 0)
    closing_empty = closing_turns = 0
    for t in transcripts:
        for kind, count in reattempt_kinds(t.episode, t.outputs, t.cut).items():
            totals[kind] += count
        if t.episode.closing_budget:
            closing_turns += 1
            closing_empty += not t.outputs[-1].strip()
    n = len(transcripts)
    metrics = aggregate([t.score() for t in transcripts])
    out = {
        "episodes": n,
        "accuracy": metrics["accuracy"],
        "reattempts": metrics["reattempts"],
        "resumption_rate": metrics["resumption_rate"],
        **{f"tags_{kind}": totals[kind] / n for kind in REATTEMPT_KINDS},
    }
    if closing_turns:
        out["closing_empty"] = closing_empty / closing_turns
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="base model directory or Hub id")
    parser.add_argument("--adapter", help="LoRA adapter directory (training/reinforce.py output)")
    parser.add_argument("--dataset_path", default="build/interrupt_bench")
    parser.add_argument("--config", default="default")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument(
        "--samples", type=int, default=0, help="0: greedy; K: K sampled sessions per episode"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--num_fewshot",
        type=int,
        default=demonstrations.DEFAULT_SHOTS,
        help="demonstration sessions (default: the task's)",
    )
    args = parser.parse_args(argv)
    result = inspect(
        args.model,
        args.adapter,
        args.dataset_path,
        args.config,
        args.split,
        args.episodes,
        args.samples,
        args.seed,
        args.num_fewshot,
    )
    width = max(map(len, result))
    for key, value in result.items():
        print(
            f"{key:<{width}}  {value:.3f}"
            if isinstance(value, float)
            else f"{key:<{width}}  {value}"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
