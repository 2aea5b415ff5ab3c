"""The project's own reference models: small Llama-style models trained from scratch on
the CPU, so that a real model can take the benchmark with no Hub and no GPU.

    interrupt-bench-reference-models build --size small [--out DIR]
    interrupt-bench-reference-models path --size small   # for scripts
    interrupt-bench-reference-models push --size small ORG/NAME   # card and all

Two phases, like a real model's pretraining and fine-tuning, both on the train split:

1. *tasks*: every question/answer pair of the train split as a one-turn chat, packed
   densely into rows of ``pack_length`` tokens. About a third of the tokens here are
   answer tokens (against a tenth in whole sessions), which is what lets a 1M model
   start to copy, sort and recall a times table within minutes on a CPU.
2. *sessions*: whole sessions played by the reference policies and cut at each turn's
   budget in the model's own tokens. Most are played by *no-resume* and some by the
   *oracle*, so the models learn the protocol and come back to earlier tasks only
   sometimes.

The loss is on assistant tokens only (and the end-of-turn token after uncut text). Both
phases run in bfloat16 autocast on the CPU (fp32 weights), 1.6x faster than fp32 here.
Built once, then reused from the cache directory; the same seed gives the same weights."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from interrupt_bench.config import CONFIGS
from interrupt_bench.episodes import Episode, generate_split
from interrupt_bench.locking import exclusive
from interrupt_bench.policies import POLICIES, answer_tag
from interrupt_bench.prompts import question_message
from interrupt_bench.staging import staging_dir
from interrupt_bench.tasks import Task
from local_models.chat import turn_deltas
from local_models.tiny_model import corpus, train_tokenizer

BUILD_VERSION = "3"


@dataclass(frozen=True)
class ModelSize:
    hidden_size: int
    layers: int
    heads: int
    vocab_size: int
    learning_rate: float
    task_steps: int  # phase 1: packed question/answer rows
    task_batch: int
    pack_length: int
    task_episodes: int  # train-split episodes per config (all configs; the split has 2000)
    session_steps: int  # phase 2: cut sessions, one per row
    session_batch: int
    session_episodes: int  # train-split episodes per config in SFT_CONFIGS


SIZES = {
    # A miniature for tests: the same code path in seconds.
    "mini": ModelSize(32, 2, 2, 512, 3e-3, 12, 8, 128, 20, 8, 4, 8),
    # About 1.2M and 1.8M parameters, trained on the same data for the same steps; the
    # wider model takes a lower learning rate, as wider models do (at 3e-3 it ended at
    # task loss 0.500 against small's 0.428; at 2e-3, 0.366). The larger builds in
    # <= 15 minutes on a 2-core CPU.
    "small": ModelSize(128, 4, 4, 1024, 3e-3, 850, 32, 256, 2000, 120, 16, 500),
    "base": ModelSize(160, 4, 4, 1024, 2e-3, 850, 32, 256, 2000, 120, 16, 500),
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


def train_episodes(n: int, configs=tuple(CONFIGS)) -> Iterator[Episode]:
    for name in configs:
        yield from generate_split(CONFIGS[name], "train", n)


def task_example(tokenizer, task_id: int, task: Task) -> tuple[list[int], list[bool]]:
    """One question/answer pair as a one-turn chat: (token ids, loss mask on the answer)."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question_message(task_id, task.question)}],
        tokenize=False,
        add_generation_prompt=True,
    )
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    answer_ids = tokenizer.encode(answer_tag(task_id, task.answer), add_special_tokens=False)
    answer_ids.append(tokenizer.eos_token_id)
    return prompt_ids + answer_ids, [False] * len(prompt_ids) + [True] * len(answer_ids)


def lm_training_rows(tokenizer, size: ModelSize, seed: int) -> list[tuple[list[int], list[bool]]]:
    """Phase-1 data: every task of the train split (all configs) as a one-turn chat with a
    random task number, shuffled and packed into rows of at most ``pack_length`` tokens."""
    rng = random.Random(seed)
    pairs = [
        task_example(tokenizer, rng.randint(1, 10), task)
        for episode in train_episodes(size.task_episodes)
        for task in episode.tasks
    ]
    rng.shuffle(pairs)
    rows: list[tuple[list[int], list[bool]]] = []
    ids: list[int] = []
    mask: list[bool] = []
    for pair_ids, pair_mask in pairs:
        if ids and len(ids) + len(pair_ids) > size.pack_length:
            rows.append((ids, mask))
            ids, mask = [], []
        ids, mask = ids + pair_ids, mask + pair_mask
    return rows


def session_examples(tokenizer, size: ModelSize, seed: int) -> list[tuple[list[int], list[bool]]]:
    """Phase-2 data: sessions played by a policy drawn from ``POLICY_MIX`` and cut at the
    budgets, shuffled in runs of ``session_batch`` sessions of one config, so that a batch pads
    to sessions of similar length (1.4x faster than mixing 2- and 10-task sessions)."""
    rng = random.Random(seed)
    policies, weights = zip(*POLICY_MIX.items())
    runs = []
    for name in SFT_CONFIGS:
        examples = [
            sft_example(tokenizer, episode, rng.choices(policies, weights)[0])
            for episode in train_episodes(size.session_episodes, (name,))
        ]
        rng.shuffle(examples)
        step = size.session_batch
        runs += [examples[i : i + step] for i in range(0, len(examples) - step + 1, step)]
    rng.shuffle(runs)
    return [example for run in runs for example in run]


def _batch(rows: list[tuple[list[int], list[bool]]], pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id)
    attn = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for row, (seq, mask) in enumerate(rows):
        ids[row, : len(seq)] = torch.tensor(seq)
        attn[row, : len(seq)] = 1
        labels[row, : len(seq)] = torch.where(torch.tensor(mask), torch.tensor(seq), -100)
    return ids, attn, labels


def build_reference_model(
    size_name: str, out_dir: str | os.PathLike, seed: int = 0, progress: bool = True
) -> Path:
    """Train and save one reference model (a standard Hugging Face directory). A second
    build into the same ``out_dir`` waits for the first (``interrupt_bench.locking``)."""
    out = Path(out_dir)
    with exclusive(out, "reference model directory", wait=True):
        return _build_locked(size_name, out, seed, progress)


def _build_locked(size_name: str, out: Path, seed: int, progress: bool) -> Path:
    """The build proper, with ``out``'s lock held: trained, saved in a staging directory
    of this process's own, renamed into place."""
    import torch
    from tqdm.auto import tqdm
    from transformers import LlamaConfig, LlamaForCausalLM

    size = SIZES[size_name]
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
    phases = [
        ("tasks", lm_training_rows(tokenizer, size, seed), size.task_steps, size.task_batch),
        (
            "sessions",
            session_examples(tokenizer, size, seed),
            size.session_steps,
            size.session_batch,
        ),
    ]
    total = sum(steps for _, _, steps, _ in phases)
    optimizer = torch.optim.AdamW(model.parameters(), lr=size.learning_rate, weight_decay=0.01)
    warmup = max(1, total // 25)

    def lr_at(step: int) -> float:  # one warm-up and cosine decay over both phases
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    final_loss = {}
    for phase, data, steps, batch_size in phases:
        bar = tqdm(range(steps), desc=f"{size_name}: {phase}", disable=not progress)
        losses = []
        for step in bar:
            rows = [data[(step * batch_size + i) % len(data)] for i in range(batch_size)]
            ids, attn, labels = _batch(rows, tokenizer.pad_token_id)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        final_loss[phase] = round(sum(losses[-20:]) / len(losses[-20:]), 4)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(out)  # .NAME.partial-PID-xxxx: this run's own, never another's
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {
            "size": size_name,
            **recipe(size_name, seed),
            "parameters": sum(p.numel() for p in model.parameters()),
            "task_rows": len(phases[0][1]),
            "sft_sessions": len(phases[1][1]),
            "final_loss": final_loss,
            "seconds": round(time.perf_counter() - start, 1),
        }
        (tmp / "reference_model.json").write_text(json.dumps(info, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(info, str(out)))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def recipe(size_name: str, seed: int) -> dict:
    """What decides a build's weights: recorded by each build, compared with the cache."""
    return {**asdict(SIZES[size_name]), "seed": seed, "build_version": BUILD_VERSION}


def write_reference_card(path: Path, model_ref: str) -> None:
    """(Re)write ``path/README.md`` from the build's ``reference_model.json``."""
    info = json.loads((path / "reference_model.json").read_text())
    (path / "README.md").write_text(model_card(info, model_ref))


def model_card(info: dict, model_ref: str) -> str:
    """The model card (``hub_cards/reference_model_card.md.j2``) from what a build
    recorded; ``model_ref`` is how its commands name the model (a directory or Hub id)."""
    from hub_cards import render_card
    from interrupt_bench.dataset import HUB_DATASET_ID

    return render_card(
        "reference_model_card.md.j2",
        info=info,
        model_ref=model_ref,
        dataset_id=HUB_DATASET_ID,
        policy_mix=", ".join(f"{share:.0%} {name}" for name, share in POLICY_MIX.items()),
        sft_configs=", ".join(f"`{name}`" for name in SFT_CONFIGS),
    )


def push_reference_model(size_name: str, repo_id: str, seed: int = 0, private: bool = False):
    """Upload the cached model (built first if missing) with a card that names ``repo_id``."""
    from hub_cards.push import push_to_hub

    path = reference_model(size_name, seed)
    write_reference_card(path, repo_id)
    again = f"interrupt-bench-reference-models push --size {size_name} --seed {seed} {repo_id}"
    return push_to_hub(path, repo_id, private, repo_type="model", again=again)


def cached_model_path(
    size_name: str, seed: int = 0, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Where the cache keeps a reference model (whether or not it is built yet)."""
    return Path(cache_dir or default_cache_dir()) / f"{size_name}-seed{seed}-v{BUILD_VERSION}"


def reference_model(
    size_name: str = "small", seed: int = 0, cache_dir: str | os.PathLike | None = None
) -> Path:
    """The cached model directory, built first when it is not there yet.

    A cached model is reused only if it was built by the recipe in ``SIZES`` now: a
    size whose numbers changed under the same build version would otherwise be scored
    silently with the old weights. A stale one is kept beside it as ``<name>.stale``."""
    path = cached_model_path(size_name, seed, cache_dir)
    complete = all((path / name).exists() for name in ("reference_model.json", "README.md"))
    if complete and not stale_recipe(path, size_name, seed):
        return path
    # Two processes asking for one uncached model: the second waits for the first's
    # build and then uses it, instead of both training into one directory.
    with exclusive(path, "reference model directory", wait=True):
        stale = stale_recipe(path, size_name, seed)
        if stale:
            print(
                f"{path} was built by another recipe ({stale}); rebuilding it, the old one "
                f"moves to {path.name}.stale",
                file=sys.stderr,
            )
            shutil.rmtree(path.with_name(path.name + ".stale"), ignore_errors=True)
            os.replace(path, path.with_name(path.name + ".stale"))
        if not (path / "reference_model.json").exists():
            _build_locked(size_name, path, seed, progress=True)
        if not (path / "README.md").exists():  # cached by a build that wrote no card
            write_reference_card(path, str(path))
    return path


def stale_recipe(path: Path, size_name: str, seed: int) -> str:
    """How the model cached at ``path`` differs from today's recipe ("" if it does not,
    or if nothing is cached there)."""
    info_file = path / "reference_model.json"
    if not info_file.exists():
        return ""
    try:
        info = json.loads(info_file.read_text())
    except json.JSONDecodeError:
        return f"{info_file.name} is not JSON"
    want = recipe(size_name, seed)
    diffs = [f"{k} {info.get(k)!r} -> {v!r}" for k, v in want.items() if info.get(k) != v]
    return ", ".join(diffs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="interrupt-bench-reference-models")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train a reference model (or reuse the cached one)")
    b.add_argument("--size", choices=sorted(SIZES), default="small")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", help="write here instead of the cache directory (always rebuilds)")
    p = sub.add_parser("path", help="print the cached model's directory (built if missing)")
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--seed", type=int, default=0)
    u = sub.add_parser("push", help="upload the cached model and its card to the Hub")
    u.add_argument("repo_id", help="Hub model repo, for example your-org/interrupt-bench-small")
    u.add_argument("--size", choices=sorted(SIZES), default="small")
    u.add_argument("--seed", type=int, default=0)
    u.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "push":
        from hub_cards.push import HubError

        try:
            print(push_reference_model(args.size, args.repo_id, args.seed, args.private))
        except HubError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "path":
        print(reference_model(args.size, args.seed))
        return 0
    if args.out:
        path = build_reference_model(args.size, args.out, args.seed)
    else:
        path = reference_model(args.size, args.seed)
    info = json.loads((path / "reference_model.json").read_text())
    print(
        f"{path}: {info['parameters']:,} parameters, final loss {info['final_loss']}, "
        f"built in {info['seconds']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
