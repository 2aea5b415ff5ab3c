"""One REINFORCE step on a real model, the old loss path beside the new, in one run:

  rollout   sessions sampled on the session engine (the task's prompts: chat template,
            one demonstration), as ``training/reinforce.py`` samples them;
  full      the old loss path (the floor): full logits of every position, log-softmax
            over the whole vocabulary, then the sampled tokens' entries;
  selective the LM head and log-softmax on the sampled positions only;
  prefix    selective, with the prefix every session shares (system prompt,
            demonstration) run once without gradient and reused as every row's cache.

Each loss path runs in its own process (its own peak RSS), with LoRA on the
configuration's modules and bf16 autocast where the CPU has native bf16, and prints
forward+backward seconds, sampled tokens/s, peak RSS, and how far its log-probs are from
the sampler's (mean, 99th percentile, max) and from the same tokens shifted by one (what
a misaligned loss would see). SmolLM2-135M-Instruct when cached, else a random-init
Llama of its shape. ``/usr/bin/time -v`` on a training run gives the same peak RSS.

    .venv/bin/python benchmarks/bench_training.py [--episodes 2] [--samples 8]
        [--micro-batch 4] [--full-micro-batch 2]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_real_model import model_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]  # training/configs/smollm2-135m-cpu.yaml


def load(model_path: str, dtype):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS)
    torch.manual_seed(0)  # the same adapter in every process, so gradients compare
    return tok, get_peft_model(base, lora), dtype


def rollout(args) -> dict:
    """Sample the step's sessions; pickle their token records for the loss paths."""
    import torch

    from interrupt_bench import demonstrations
    from interrupt_bench.config import get_config
    from interrupt_bench.episodes import generate_split
    from training.rollouts import sample_sessions

    tok, model, dtype = load(args.model, args.dtype_obj)
    config = get_config("default")
    shots = demonstrations.as_sessions(demonstrations.pick(generate_split(config, "train", 64), 1))
    episodes = generate_split(config, "train", args.episodes)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        rollouts = sample_sessions(
            model.eval(), tok, [e for e in episodes for _ in range(args.samples)],
            chat=True, temperature=1.0, seed=1, shots=shots,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    Path(args.sessions).write_bytes(pickle.dumps(rollouts.sessions))
    lengths = [len(s.ids) for s in rollouts.sessions]
    return {
        "seconds": seconds,
        "generated_tokens": rollouts.generated_tokens,
        "tokens_per_s": rollouts.generated_tokens / seconds,
        "mean_length": sum(lengths) / len(lengths),
        "resumed": sum(t.score().resumption_num for t in rollouts.transcripts),
        "open": sum(t.score().resumption_den for t in rollouts.transcripts),
    }


def full_logits_logprobs(model, ids, attn, temperature, mask):
    """The old path: logits of every position over the whole vocabulary, in float32."""
    import torch

    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    logp_all = torch.log_softmax(logits / temperature, dim=-1)
    logp = logp_all.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return logp * mask, None


def loss_path(args) -> dict:
    import torch

    from training.loss import (
        batch_tensors,
        prefix_cache,
        shared_prefix_length,
        token_logprobs,
    )

    tok, model, dtype = load(args.model, args.dtype_obj)
    model.train()
    sessions = pickle.loads(Path(args.sessions).read_bytes())
    micro = args.full_micro_batch if args.path == "full" else args.micro_batch
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)
    prefix, n_prefix = None, 0
    start = time.perf_counter()
    if args.path == "prefix":
        n_prefix = shared_prefix_length(sessions)
        with autocast:
            prefix = prefix_cache(model, sessions[0].ids[: n_prefix - 1], torch.device("cpu"))
    errors, shifted, n_tokens = [], [], 0
    for i in range(0, len(sessions), micro):
        idx = list(range(i, min(i + micro, len(sessions))))
        ids, attn, sampled, old = batch_tensors(sessions, idx, tok.pad_token_id, "cpu")
        mask = sampled[:, 1:].float()
        with autocast:
            if args.path == "full":
                logp, _ = full_logits_logprobs(model, ids, attn, 1.0, mask)
            else:
                logp, _ = token_logprobs(model, ids, attn, 1.0, mask, prefix)
            loss = -(logp * mask).sum() / max(float(mask.sum()), 1.0)
        loss.backward()
        where = mask.bool()
        errors.append((logp.detach() - old[:, 1:]).abs()[where])
        shifted.append((logp.detach()[:, 1:] - old[:, 1:-1]).abs()[where[:, 1:]])
        n_tokens += int(where.sum())
    seconds = time.perf_counter() - start
    err, off = torch.cat(errors).float(), torch.cat(shifted).float()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
    torch.save(grad, args.sessions + f".{args.path}.grad")
    return {
        "seconds": seconds,
        "micro_batch": micro,
        "sampled_tokens": n_tokens,
        "tokens_per_s": n_tokens / seconds,
        "prefix_tokens": n_prefix,
        "err_mean": float(err.mean()),
        "err_p99": float(torch.quantile(err, 0.99)),
        "err_max": float(err.max()),
        "shifted_err_mean": float(off.mean()),
    }


def child(args) -> None:
    import torch

    from local_models.hardware import best_dtype

    torch.set_num_threads(args.threads)
    args.dtype_obj = getattr(torch, best_dtype() if args.dtype == "auto" else args.dtype)
    result = rollout(args) if args.path == "rollout" else loss_path(args)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def run(path: str, args, model: Path, sessions: str) -> dict:
    cmd = [
        sys.executable, __file__, "--child", path, "--model", str(model), "--sessions", sessions,
        "--episodes", str(args.episodes), "--samples", str(args.samples), "--micro-batch",
        str(args.micro_batch), "--full-micro-batch", str(args.full_micro_batch), "--dtype",
        args.dtype, "--threads", str(args.threads),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{path} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--full-micro-batch", type=int, default=2, help="one that fits")
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 where native")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--paths", nargs="+", default=["full", "selective", "prefix"])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--sessions", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.path = args.child
        child(args)
        return
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        model, label = model_dir(Path(tmp))
        sessions = str(Path(tmp) / "sessions.pkl")
        print(f"model: {label}; {args.episodes} episodes x {args.samples} samples, 1 shot")
        figures = {"rollout": run("rollout", args, model, sessions)}
        r = figures["rollout"]
        print(
            f"rollout   {r['seconds']:7.1f} s  {r['generated_tokens']} sampled tokens "
            f"({r['tokens_per_s']:.0f}/s), mean session {r['mean_length']:.0f} tokens, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB; resumed {r['resumed']} of {r['open']} "
            "tasks left open"
        )
        print(
            f"{'path':<10}{'micro':>6}{'fwd+bwd s':>11}{'tok/s':>8}{'peak RSS MB':>13}"
            f"{'|err| mean':>12}{'p99':>8}{'max':>8}{'shifted mean':>14}"
        )
        for path in args.paths:
            f = figures[path] = run(path, args, model, sessions)
            print(
                f"{path:<10}{f['micro_batch']:>6}{f['seconds']:>11.1f}{f['tokens_per_s']:>8.0f}"
                f"{f['peak_rss_mb']:>13.0f}{f['err_mean']:>12.4f}{f['err_p99']:>8.3f}"
                f"{f['err_max']:>8.3f}{f['shifted_err_mean']:>14.2f}"
            )
        grads = {p: torch.load(sessions + f".{p}.grad") for p in args.paths}
        if "full" in figures:
            for path in args.paths[1:]:
                ratio = figures["full"]["seconds"] / figures[path]["seconds"]
                rss = figures[path]["peak_rss_mb"] / figures["full"]["peak_rss_mb"]
                cos = float(torch.nn.functional.cosine_similarity(grads[path], grads["full"], 0))
                print(
                    f"{path} vs full: {ratio:.2f}x faster, peak RSS {rss:.2f}x full's, "
                    f"gradient cosine {cos:.3f}"
                )
                figures[path]["grad_cosine_vs_full"] = cos
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
