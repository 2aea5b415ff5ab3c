"""One REINFORCE step on a real model, the old loss path beside the new, in one run:

  rollout   sessions sampled on the session engine (the task's prompts: chat template,
            one demonstration), as ``training/reinforce.py`` samples them;
  full      the old loss path (the floor): full logits of every position, log-softmax
            over the whole vocabulary, then the sampled tokens' entries;
  selective the LM head and log-softmax on the sampled positions only;
  prefix    selective, with the prefix every session shares (system prompt,
            demonstration) run once without gradient and reused as every row's cache;
  prefix-eager  prefix, with transformers' eager attention (matmul, softmax, matmul)
            in place of SDPA (on the CPU, its flash kernel).

Each loss path runs in its own process (its own peak RSS), with LoRA on the
configuration's modules and bf16 autocast where the CPU has native bf16, and prints
forward+backward seconds, sampled tokens/s, peak RSS, and how far its log-probs are from
the sampler's (mean, 99th percentile, max) and from the same tokens shifted by one (what
a misaligned loss would see). SmolLM2-135M-Instruct when cached, else a random-init
Llama of its shape. ``/usr/bin/time -v`` on a training run gives the same peak RSS.

    .venv/bin/python benchmarks/bench_training.py [--episodes 2] [--samples 8]
        [--micro-batch 4] [--full-micro-batch 2]

``--profile`` also runs each loss path under ``torch.profiler`` and prints its ten
costliest operators by self CPU time (forward and backward together), so the gap to the
compute limit below has names.

``--steps N --config CONFIG`` profiles whole steps instead: ``training/reinforce.py``
runs N steps of the config (no validation, no checkpoints, so only the steps are timed),
and the bench prints each phase from the run's own ``train_log.jsonl`` (rollouts, the
loss with its KL-reference share, the optimizer), steps per hour, and the loss phase
against its compute limit: 6 x the decoder's matmul parameters x the ids the loss phase
runs (the policy's forward 2, its backward to the activations 2, the reference's forward
2; LoRA's own weights are negligible), over the machine's measured matmul rate.

    .venv/bin/python benchmarks/bench_training.py --steps 5 \
        --config training/configs/smollm2-135m-easy-cpu.yaml [--set --micro_batch_size 16]
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
from contextlib import nullcontext
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
    if args.path.endswith("-eager"):
        model.get_base_model().config._attn_implementation = "eager"
    model.train()
    sessions = pickle.loads(Path(args.sessions).read_bytes())
    micro = args.full_micro_batch if args.path == "full" else args.micro_batch
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)
    prefix, n_prefix = None, 0
    start = time.perf_counter()
    if args.path.startswith("prefix"):
        n_prefix = shared_prefix_length(sessions)
        with autocast:
            prefix = prefix_cache(model, sessions[0].ids[: n_prefix - 1], torch.device("cpu"))
    errors, shifted, n_tokens = [], [], 0
    profiler = (
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        if args.profile
        else nullcontext()
    )
    with profiler:
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
    top = ""
    if args.profile:
        top = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
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
        "profile": top,
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
        args.dtype, "--threads", str(args.threads), *(["--profile"] if args.profile else []),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{path} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def matmul_rate(dtype, threads: int, seconds: float = 3.0) -> float:
    """FLOP/s of a decoder-shaped matmul (2048 rows x hidden 576 x 1536), ``dtype``."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(2048, 576, dtype=dtype)
    b = torch.randn(576, 1536, dtype=dtype)
    torch.matmul(a, b)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.matmul(a, b)
        n += 1
    return n * 2 * 2048 * 576 * 1536 / (time.perf_counter() - start)


def decoder_matmul_params(model: str) -> int:
    """Parameters of the decoder layers' matmuls (what every id runs through), without
    the embeddings and the LM head (which the loss applies to sampled positions only)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
    return sum(
        p.numel() for name, p in lm.named_parameters() if ".layers." in name and p.dim() == 2
    )


def profile_steps(args) -> None:
    """N steps of a training config, timed phase by phase from its own log."""
    import torch

    from local_models.hardware import best_dtype, describe

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        model, label = model_dir(Path(tmp))
        out = Path(tmp) / "run"
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch", "-q", "--cpu",
            "--num_processes", "1", "training/reinforce.py", "--config", args.config,
            "--model_name_or_path", str(model), "--output_dir", str(out),
            "--max_steps", str(args.steps), "--eval_every", "0", "--save_every", "0",
            *args.set,
        ]  # fmt: skip
        began = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        wall = time.perf_counter() - began
        if proc.returncode:
            raise SystemExit(f"training failed:\n{proc.stderr[-3000:]}")
        rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
        params = decoder_matmul_params(str(model))
    rows = [r for r in rows if "step_s" in r]
    steady = rows[1:] or rows  # step 1 also runs the first-step log-prob check
    dtype = getattr(torch, best_dtype())
    rate = matmul_rate(dtype, args.threads)

    def mean(key: str) -> float:
        return sum(r[key] for r in steady) / len(steady)

    step = mean("step_s")
    print(f"machine: {describe()}")
    print(f"model: {label}; config {args.config} {' '.join(args.set)}; {args.steps} steps "
          f"in {wall:.0f} s (load and first-step check included); means of steps "
          f"{steady[0]['step']}-{steady[-1]['step']}:")  # fmt: skip
    phases = [("rollouts", "rollout_s"), ("loss", "loss_s"),
              ("  of it: KL reference", "reference_s"), ("optimizer", "optimizer_s")]  # fmt: skip
    for name, key in phases:
        print(f"  {name:<24}{mean(key):8.2f} s  {mean(key) / step:6.1%}")
    other = step - mean("rollout_s") - mean("loss_s") - mean("optimizer_s")
    print(f"  {'scoring, advantages':<24}{other:8.2f} s  {other / step:6.1%}")
    print(f"  {'step':<24}{step:8.2f} s  = {3600 / step:.0f} steps/hour, 100 steps in "
          f"{100 * step / 60:.0f} min")  # fmt: skip
    tokens, padded = mean("loss_tokens"), mean("loss_padded_tokens")
    limit = 6 * params * tokens / rate
    print(f"loss phase: {tokens:.0f} ids a step after the shared prefix ({padded:.0f} with "
          f"padding), {params / 1e6:.1f}M decoder matmul parameters; {str(dtype)[6:]} matmul "
          f"{rate / 1e12:.2f} TFLOP/s measured on {args.threads} threads")  # fmt: skip
    print(f"loss phase limit 6 x params x ids / rate = {limit:.2f} s; measured "
          f"{mean('loss_s'):.2f} s = {mean('loss_s') / limit:.1f}x the limit")  # fmt: skip
    if args.json:
        figures = {"steps": steady, "matmul_flops": rate, "decoder_params": params, "wall_s": wall}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


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
    parser.add_argument("--paths", nargs="+", default=["full", "selective", "prefix"],
                        choices=["full", "selective", "prefix", "prefix-eager"])  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--profile", action="store_true", help="top operators of each loss path")
    parser.add_argument("--steps", type=int, help="profile N whole steps of --config instead")
    parser.add_argument("--config", default="training/configs/smollm2-135m-easy-cpu.yaml")
    parser.add_argument("--set", nargs=argparse.REMAINDER, default=[],
                        help="flags passed on to training/reinforce.py (last)")  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--sessions", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.path = args.child
        child(args)
        return
    if args.steps:
        profile_steps(args)
        return
    import torch

    from local_models.hardware import describe

    with tempfile.TemporaryDirectory() as tmp:
        model, label = model_dir(Path(tmp))
        sessions = str(Path(tmp) / "sessions.pkl")
        print(f"machine: {describe()}")
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
            if f["profile"]:
                print(f["profile"])
        grads = {p: torch.load(sessions + f".{p}.grad") for p in args.paths}
        first = args.paths[0]  # every other path against the first (full by default)
        for path in args.paths[1:]:
            ratio = figures[first]["seconds"] / figures[path]["seconds"]
            rss = figures[path]["peak_rss_mb"] / figures[first]["peak_rss_mb"]
            cos = float(torch.nn.functional.cosine_similarity(grads[path], grads[first], 0))
            print(
                f"{path} vs {first}: {ratio:.2f}x faster, peak RSS {rss:.2f}x {first}'s, "
                f"gradient cosine {cos:.4f}"
            )
            figures[path][f"grad_cosine_vs_{first}"] = cos
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
