"""The project's own reference models: small Llama-style models trained from scratch on
the CPU by supervised fine-tuning on transcripts of the train split played by the
reference policies, so that a real model can take the benchmark with no Hub and no GPU.

    python -m interrupt_bench.reference_models build --size small [--out DIR]

The training mix is meant to give realistic rather than perfect models: most sessions
are played by *no-resume* and some by the *oracle*, so the models learn the format, solve
what their size allows, and come back to earlier tasks only sometimes. Assistant tokens
are the policy's text cut at the turn's budget in the model's own tokens; the loss is on
those tokens only (and on the end-of-turn token when the text was not cut). Built once,
then reused from the cache directory; the same seed gives the same weights."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from interrupt_bench.config import CONFIGS
from interrupt_bench.episodes import Episode, generate_split
from interrupt_bench.policies import POLICIES
from interrupt_bench.rollout import turn_deltas
from interrupt_bench.tiny_model import corpus, train_tokenizer

BUILD_VERSION = "1"


@dataclass(frozen=True)
class ModelSize:
    hidden_size: int
    layers: int
    heads: int
    vocab_size: int
    steps: int
    batch_size: int
    learning_rate: float
    episodes: int  # train episodes per config played for the SFT data


SIZES = {
    # A miniature for tests: the same code path in seconds.
    "mini": ModelSize(32, 2, 2, 512, 30, 8, 3e-3, 40),
    # About 1M and 5M parameters; steps sized for <= 15 minutes on a 2-core CPU.
    "small": ModelSize(128, 4, 4, 1024, 450, 16, 2e-3, 1000),
    "base": ModelSize(256, 6, 8, 1024, 150, 16, 1e-3, 1000),
}
# Share of training sessions per policy: mostly no-resume, sometimes the oracle.
POLICY_MIX = {"no_resume": 0.7, "oracle": 0.3}
SFT_CONFIGS = ("default", "tasks2_budget0to100", "tasks10_budget0to100", "tasks5_budget50to200")


def default_cache_dir() -> Path:
    root = os.environ.get("INTERRUPT_BENCH_CACHE") or Path.home() / ".cache" / "interrupt-bench"
    return Path(root) / "models"


def sft_example(
    tokenizer, episode: Episode, policy: str, chat: bool = True
) -> tuple[list[int], list[bool]]:
    """One session as (token ids, loss mask): template tokens masked, the policy's text
    cut at each turn's budget in this tokenizer's tokens trained on."""
    deltas = [
        tokenizer.encode(d, add_special_tokens=False) for d in turn_deltas(tokenizer, episode, chat)
    ]
    budgets, eos = episode.turn_budgets(), tokenizer.eos_token_id
    ids: list[int] = []
    mask: list[bool] = []
    outputs: list[str] = []
    cut: list[bool] = []
    for t, delta in enumerate(deltas):
        delta_mask = [False] * len(delta)
        if t and not cut[-1] and delta and delta[0] == eos:
            delta_mask[0] = True  # the end-of-turn token after a finished answer
        ids += delta
        mask += delta_mask
        full = tokenizer.encode(
            POLICIES[policy](episode, t, tuple(outputs)), add_special_tokens=False
        )
        kept = full[: budgets[t]]
        cut.append(len(full) > budgets[t])
        outputs.append(tokenizer.decode(kept, skip_special_tokens=True))
        ids += kept
        mask += [True] * len(kept)
    if cut and not cut[-1] and eos is not None:
        ids.append(eos)
        mask.append(True)
    return ids, mask


def sft_data(tokenizer, size: ModelSize, seed: int) -> list[tuple[list[int], list[bool]]]:
    rng = random.Random(seed)
    policies, weights = zip(*POLICY_MIX.items())
    data = []
    for name in SFT_CONFIGS:
        for episode in generate_split(CONFIGS[name], "train", size.episodes, seed):
            data.append(sft_example(tokenizer, episode, rng.choices(policies, weights)[0]))
    rng.shuffle(data)
    return data


def build_reference_model(
    size_name: str, out_dir: str | os.PathLike, seed: int = 0, progress: bool = True
) -> Path:
    """Train and save one reference model (a standard Hugging Face directory)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import LlamaConfig, LlamaForCausalLM

    size = SIZES[size_name]
    out = Path(out_dir)
    start = time.perf_counter()
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(corpus(seed=seed), size.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.hidden_size * 4,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    data = sft_data(tokenizer, size, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=size.learning_rate, weight_decay=0.01)
    warmup = max(1, size.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, size.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    bar = tqdm(range(size.steps), desc=f"sft {size_name}", disable=not progress)
    losses = []
    for step in bar:
        batch = [data[(step * size.batch_size + i) % len(data)] for i in range(size.batch_size)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        attn = torch.zeros(len(batch), width, dtype=torch.long)
        labels = torch.full((len(batch), width), -100)
        for row, (seq, mask) in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            attn[row, : len(seq)] = 1
            labels[row, : len(seq)] = torch.where(torch.tensor(mask), torch.tensor(seq), -100)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    info = {
        "size": size_name,
        **asdict(size),
        "seed": seed,
        "build_version": BUILD_VERSION,
        "parameters": sum(p.numel() for p in model.parameters()),
        "sft_sessions": len(data),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (tmp / "reference_model.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def reference_model(
    size_name: str = "small", seed: int = 0, cache_dir: str | os.PathLike | None = None
) -> Path:
    """The cached model directory, built first when it is not there yet."""
    path = Path(cache_dir or default_cache_dir()) / f"{size_name}-seed{seed}-v{BUILD_VERSION}"
    if not (path / "reference_model.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        build_reference_model(size_name, path, seed)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interrupt_bench.reference_models")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train a reference model (or reuse the cached one)")
    b.add_argument("--size", choices=sorted(SIZES), default="small")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", help="write here instead of the cache directory (always rebuilds)")
    args = parser.parse_args(argv)
    if args.out:
        path = build_reference_model(args.size, args.out, args.seed)
    else:
        path = reference_model(args.size, args.seed)
    info = json.loads((path / "reference_model.json").read_text())
    print(
        f"{path}: {info['parameters']:,} parameters, final SFT loss {info['final_loss']:.3f}, "
        f"built in {info['seconds']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
