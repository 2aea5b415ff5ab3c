"""Replaying interrupted sessions on a real model, side by side in one run:

  (a) the harness end to end: ``lm_eval.simple_evaluate`` on the ``hf`` model (the
      session engine, ``turn_batching: auto``), dataset loading and scoring included;
  (b) the floor: the same turn requests through raw batched ``model.generate``, turn by
      turn (each turn: batches of ``--batch-size``, the largest budget, then cut);
  (c) the session engine alone on the same sessions and prompts;
  (d) the model's own decode rate at the same batch size: steady-state decode steps on
      a KV cache as long as the sessions' mean context, no replay;
  (e) the weight-read bound: the weights' bytes over this machine's measured read
      bandwidth (half its copy rate), one step per weight read;
  (f) the compute limit of (c)'s own work: the prompt tokens (c) had to prefill, in
      chunks of the cheapest size per token (up to the engine's ``prefill_tokens``), plus the
      tokens (c) generated, in full decode batches at (d)'s step time. No replay can do
      the same work faster on this machine, so (c)/(f) is how close it comes, and
      (f)/(d) is the highest c/d any replay of these sessions can reach here: they carry
      ~3.6 prompt tokens per generated token, and on this CPU a prompt token costs about
      a quarter of a generated one (compute, not weight reads, bounds both).

SmolLM2-135M-Instruct when it is cached (``interrupt-bench-models fetch
smollm2-135m-instruct``), else a random-init Llama of its shape. The task's default shot
(1 demonstration, chat template). Each path runs in its own process, so peak RSS is its
own. Goals (issue 16): c at least 3x faster than b; a within 1.1x of c; c's tokens/s at
least half of d's.

    .venv/bin/python benchmarks/bench_real_model.py [--episodes 64] [--batch-size 32]
        [--configs default tasks10_budget0to100] [--dtype auto]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import local_models  # noqa: F401  (first: hides torch extensions that cannot load here)
from lm_eval_tasks import include_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
TASK = {"default": "interrupt_bench"}  # other configs: interrupt_bench_<config>
SMOLLM2 = "smollm2-135m-instruct"


def task_name(config: str) -> str:
    return TASK.get(config, f"interrupt_bench_{config}")


def model_dir(tmp: Path) -> tuple[Path, str]:
    """The cached SmolLM2, or a random-init Llama of its shape (with the tiny tokenizer)."""
    from local_models import registry as models

    if models.is_cached(SMOLLM2):
        return models.cached_path(SMOLLM2), "SmolLM2-135M-Instruct"
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from local_models.tiny_model import corpus, train_tokenizer

    out = tmp / "random-smollm2-shape"
    if not out.exists():
        tokenizer = train_tokenizer(corpus(), 512)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=576, intermediate_size=1536,
            num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
            max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(out)
        tokenizer.save_pretrained(out)
    return out, "random-init Llama of SmolLM2's shape (SmolLM2 not cached; tiny vocabulary)"


# -- the paths, one per process ---------------------------------------------------------
def load(args):
    import torch

    torch.set_num_threads(args.threads)
    if args.path in VLLM_PATHS:  # vLLM's engine start is part of what (g) and (h) measure
        from lm_eval_tasks.vllm_lm import VllmLM

        began = time.perf_counter()
        lm = VllmLM(
            pretrained=args.model, dtype=args.dtype, enable_prefix_caching=args.path == "g",
            enforce_eager=args.enforce_eager, max_model_len=4096,
        )  # fmt: skip
        lm.start_seconds = time.perf_counter() - began
        return lm
    from lm_eval.models.huggingface import HFLM

    began = time.perf_counter()
    lm = HFLM(
        pretrained=args.model, dtype=args.dtype, device=args.device, batch_size=args.batch_size
    )
    lm.start_seconds = time.perf_counter() - began
    return lm


def sessions(lm, args):
    """The task's Instances as the hook sees them: episodes and per-session settings."""
    from lm_eval.tasks import TaskManager

    from interrupt_bench.controls import sessions_for
    from interrupt_bench.episodes import Episode
    from lm_eval_tasks.settings import RunSettings

    manager = TaskManager(
        include_path=include_path(), include_defaults=False,
        metadata={"dataset_path": args.data},
    )  # fmt: skip
    task = manager.load([task_name(args.config)])["tasks"][task_name(args.config)]
    task.build_all_requests(
        limit=args.episodes, apply_chat_template=True, chat_template=lm.apply_chat_template,
        tokenizer_name=lm.tokenizer_name, fewshot_as_multiturn=True,
    )  # fmt: skip
    episodes, settings = [], []
    for inst in task.instances:
        row, args = inst.args
        st = RunSettings.from_args(args)
        for ep in sessions_for(Episode.from_row(json.loads(row)), "interrupted"):
            episodes.append(ep)
            settings.append(st)
    return episodes, settings


def useful_tokens(transcripts) -> int:
    return sum(n or 0 for tr in transcripts for n in tr.n_tokens)


def path_a(lm, args) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(
        include_path=include_path(), include_defaults=False,
        metadata={"dataset_path": args.data},
    )  # fmt: skip
    start = time.perf_counter()
    result = simple_evaluate(
        model=lm, tasks=[task_name(args.config)], task_manager=manager, limit=args.episodes,
        apply_chat_template=True, fewshot_as_multiturn=True, log_samples=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    tokens = 0
    for sample in result["samples"][task_name(args.config)]:
        if sample["filter"] != "strict":  # one sample per filter, the same sessions
            continue
        for session in json.loads(sample["resps"][0][0])["sessions"]:
            tokens += sum(t["output_tokens"] or 0 for t in session["turns"])
    acc = result["results"][task_name(args.config)]["accuracy,strict"]
    return {"seconds": seconds, "tokens": tokens, "accuracy": acc}


def path_b(lm, args) -> dict:
    import torch

    from interrupt_bench.session import TurnResult, replay
    from lm_eval_tasks.turns import turn_prompt

    episodes, settings = sessions(lm, args)
    model, tok = lm.model, lm.tokenizer
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def responder(requests):
        prompts = [turn_prompt(lm, r, settings[r.session]) for r in requests]
        results = []
        for i in range(0, len(requests), args.batch_size):
            chunk, texts = requests[i : i + args.batch_size], prompts[i : i + args.batch_size]
            batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            batch = batch.to(model.device)
            with torch.inference_mode():
                out = model.generate(
                    **batch, max_new_tokens=max(r.budget for r in chunk), do_sample=False,
                    pad_token_id=pad,
                )  # fmt: skip
            for r, row in zip(chunk, out[:, batch["input_ids"].shape[1] :].tolist()):
                ids = row[: r.budget]
                text = tok.decode(ids, skip_special_tokens=True)
                for s in settings[r.session].stop_strings():
                    text = text.split(s)[0]
                results.append(TurnResult(text, len(ids) == r.budget, len(ids)))
        return results

    start = time.perf_counter()
    transcripts = replay(episodes, responder)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": useful_tokens(transcripts)}


def path_c(lm, args) -> dict:
    from dataclasses import asdict

    from lm_eval_tasks.backends import EngineBackend, replay_sessions

    episodes, settings = sessions(lm, args)
    start = time.perf_counter()
    played = replay_sessions(EngineBackend(lm), episodes, settings)
    transcripts, sent, stats = played.transcripts, played.prompts, played.stats
    seconds = time.perf_counter() - start
    contexts = [len(lm.tok_encode(p)) for p in sent.values()]
    return {
        "seconds": seconds,
        "tokens": useful_tokens(transcripts),
        "mean_context": sum(contexts) / max(len(contexts), 1),
        "engine": asdict(stats[-1]),
    }


def path_d(lm, args) -> dict:
    """Steady-state decode at the batch size and the sessions' mean context, two ways:
    transformers' own forward (its default attention, an in-place KV cache), and the
    engine's packed pass (its attention) on one-turn sessions with no stop."""
    import torch
    from transformers import DynamicCache

    from local_models.engine import Ask, SessionEngine

    model = lm.model
    ctx, steps = max(int(args.context), 1), 32
    ids = torch.randint(0, model.config.vocab_size, (args.batch_size, ctx), device=model.device)
    with torch.inference_mode():
        cache = DynamicCache()
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        for step in range(4 + steps):
            if step == 4:
                start = time.perf_counter()
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        hf_seconds = time.perf_counter() - start

    class OneTurn:
        def __init__(self, row):
            self.row, self.asked = row, False

        def step(self, done):
            if self.asked:
                return None
            self.asked = True
            return Ask(self.row, steps + 1)

    engine = SessionEngine(model, lm.tok_decode, batch_size=args.batch_size)
    stats = engine.run([OneTurn(r) for r in ids.tolist()])
    engine_steps = stats.forward_passes - stats.prefill_passes
    return {
        "seconds": stats.decode_seconds,
        "tokens": engine_steps * args.batch_size,
        "step_ms": 1000 * stats.decode_seconds / engine_steps,
        "hf_step_ms": 1000 * hf_seconds / steps,
    }


def path_e(lm, args) -> dict:
    import torch

    weights = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    n = 64 * 2**20  # 256 MB of float32
    x, y = torch.ones(n), torch.empty(n)
    y.copy_(x)
    start = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    seconds = (time.perf_counter() - start) / 10
    copy_gbs = 2 * 4 * n / seconds / 1e9  # bytes read + written
    step = weights / (copy_gbs / 2 * 1e9)
    return {
        "seconds": step,
        "tokens": args.batch_size,
        "weights_mb": weights / 1e6,
        "copy_gbs": copy_gbs,
        "step_ms": 1000 * step,
    }


def path_f(lm, args) -> dict:
    """Prefill cost per token at its cheapest chunk size up to the engine's
    ``prefill_tokens`` (transformers' own attention, at its best on long queries), each
    size after one warm-up pass."""
    import torch

    from local_models.engine import SessionEngine

    largest = SessionEngine(lm.model, lm.tok_decode).prefill_tokens
    best = (math.inf, largest)
    with torch.inference_mode():
        for chunk in sorted({min(c, largest) for c in (128, 256, 512, 1024, largest)}):
            ids = torch.randint(0, lm.model.config.vocab_size, (1, chunk), device=lm.model.device)
            lm.model(input_ids=ids, logits_to_keep=1)
            start, reps = time.perf_counter(), 3
            for _ in range(reps):
                lm.model(input_ids=ids, logits_to_keep=1)
            best = min(best, ((time.perf_counter() - start) / reps / chunk, chunk))
    return {"chunk": best[1], "prefill_ms_per_token": 1000 * best[0]}


def compute_limit(figures: dict, batch_size: int) -> dict | None:
    """(f): (c)'s prefilled tokens at (f)'s measured cost plus (c)'s generated tokens in
    full batches at (d)'s step time; None unless c, d and f ran."""
    if not {"c", "d", "f"} <= set(figures) or "engine" not in figures["c"]:
        return None
    e, f = figures["c"]["engine"], figures["f"]
    prefill = e["prefilled_tokens"] * f["prefill_ms_per_token"] / 1000
    decode = -(-e["generated_tokens"] // batch_size) * figures["d"]["step_ms"] / 1000
    return {
        **f,
        "seconds": prefill + decode,
        "prefill_seconds": prefill,
        "decode_seconds": decode,
        "tokens": e["generated_tokens"],
    }


PATHS = {"a": path_a, "b": path_b, "c": path_c, "d": path_d, "e": path_e, "f": path_f}


def path_vllm(lm, args) -> dict:
    """(g)/(h): the same sessions on vLLM through the hook's vLLM backend (one
    ``LLM.generate`` per wave of turns), with or without automatic prefix caching."""
    from lm_eval_tasks.backends import replay_sessions
    from lm_eval_tasks.vllm_backend import VllmBackend

    episodes, settings = sessions(lm, args)
    start = time.perf_counter()
    played = replay_sessions(VllmBackend(lm, lm.model), episodes, settings)
    transcripts, stats = played.transcripts, played.stats
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds, "tokens": useful_tokens(transcripts),
        "start_seconds": lm.start_seconds,
        "prefilled_tokens": sum(s.prefilled_tokens for s in stats),
        "reused_tokens": sum(s.reused_tokens for s in stats),
    }  # fmt: skip


VLLM_PATHS = "gh"
PATHS.update(g=path_vllm, h=path_vllm)


def child(args) -> None:
    lm = load(args)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = PATHS[args.path](lm, args)
    result.setdefault("start_seconds", lm.start_seconds)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["loaded_rss_mb"] = base_rss
    print("RESULT " + json.dumps(result), flush=True)


def run_path(path: str, args, data: Path, model: Path, config: str, context: float) -> dict:
    cmd = [
        sys.executable, __file__, "--child", path, "--data", str(data), "--model", str(model),
        "--config", config, "--episodes", str(args.episodes), "--batch-size",
        str(args.batch_size), "--dtype", args.dtype, "--device", args.device,
        "--threads", str(args.threads), "--context", str(context),
        *(["--enforce-eager"] if args.enforce_eager else []),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"path ({path}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--configs", nargs="+", default=["default", "tasks10_budget0to100"])
    parser.add_argument(
        "--paths", default="abcdefgh", help="which of a-h to run (g, h: where vLLM is installed)"
    )
    parser.add_argument(
        "--enforce-eager", action="store_true", help="(g), (h): vLLM without torch.compile"
    )
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 where native, else float32")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", choices=sorted(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--context", type=float, default=512, help=argparse.SUPPRESS)
    args = parser.parse_args()

    from local_models import hardware

    args.device = args.device or hardware.device()
    if args.dtype == "auto":
        args.dtype = hardware.best_dtype()
    if args.child:
        args.path = args.child
        return child(args)

    from dataset_builder import build_dataset
    from interrupt_bench.config import get_config

    tmp = Path(tempfile.mkdtemp(prefix="bench-real-"))
    model, described = model_dir(Path(tempfile.gettempdir()))
    data = tmp / "data"
    build_dataset(
        data, [get_config(c) for c in args.configs], splits=["train", "test"],
        sizes={"train": 50, "test": args.episodes}, progress=False,
    )  # fmt: skip
    print(
        f"{described}, {args.dtype} on {args.device}, {args.threads} threads, batch size "
        f"{args.batch_size}, {args.episodes} test episodes per config, the default shot"
    )
    print(f"machine: {hardware.describe()}")
    import importlib.util

    have_vllm = importlib.util.find_spec("vllm") is not None
    if not have_vllm and set(VLLM_PATHS) & set(args.paths):
        print("(g), (h) skipped: vLLM is not installed here (run this in .venv-vllm)")
    report = {}
    for config in args.configs:
        figures: dict[str, dict] = {}
        context = 512.0
        for path in "cabdefgh":  # c first: its mean context sizes (d)
            if path not in args.paths:
                continue
            if path in VLLM_PATHS and not have_vllm:
                continue
            figures[path] = run_path(path, args, data, model, config, context)
            context = figures.get("c", {}).get("mean_context", context)
        limit = compute_limit(figures, args.batch_size)
        if limit is None:
            figures.pop("f", None)
        else:
            figures["f"] = {**limit, "peak_rss_mb": figures["f"]["peak_rss_mb"]}
        report[config] = figures
        print(f"\n{config}  (sessions' mean context {context:.0f} tokens)")
        print(f"{'path':<44}{'seconds':>9}{'tokens/s':>10}{'peak RSS MB':>13}")
        names = {
            "a": "(a) lm_eval.simple_evaluate, hf + engine",
            "b": "(b) floor: batched generate per turn",
            "c": "(c) session engine",
            "d": f"(d) decode step, batch {args.batch_size}, engine",
            "e": "(e) weight-read bound",
            "f": "(f) compute limit of (c)'s work",
            "g": "(g) vLLM, prefix caching (replay)",
            "h": "(h) vLLM, no prefix caching (replay)",
        }
        for key in "abcdefgh":
            if key in figures:
                f = figures[key]
                rate = f["tokens"] / f["seconds"]
                secs = (
                    f"{f['seconds']:.2f}"
                    if key in "abcfgh"
                    else f"{f.get('step_ms', 0):.1f}ms/step"
                )
                print(f"{names[key]:<44}{secs:>9}{rate:>10.0f}{f['peak_rss_mb']:>13.0f}")
        if "d" in figures:
            hf_rate = args.batch_size / figures["d"]["hf_step_ms"] * 1000
            hf_name = "    the same, transformers' own attention"
            print(f"{hf_name:<44}{figures['d']['hf_step_ms']:>7.1f}ms{hf_rate:>10.0f}")
        rate = {k: f["tokens"] / f["seconds"] for k, f in figures.items()}
        if "engine" in figures.get("c", {}):
            e = figures["c"]["engine"]
            print(
                f"    (c) prefilled {e['prefilled_tokens']} prompt tokens and reused "
                f"{e['reused_tokens']} from caches for {e['generated_tokens']} generated; "
                f"{e['prefill_passes']} of {e['forward_passes']} passes prefilled "
                f"({e['prefill_seconds']:.1f} s), decode-only passes {e['decode_seconds']:.1f} s"
            )
        if "f" in figures:
            f = figures["f"]
            print(
                f"    (f) = {f['prefill_seconds']:.1f} s prefill ({f['prefill_ms_per_token']:.2f}"
                f" ms per prompt token, chunks of {f['chunk']}) + {f['decode_seconds']:.1f} s "
                f"decode ({figures['d']['step_ms'] / args.batch_size:.2f} ms per generated token)"
            )
        for key in VLLM_PATHS:
            if key in figures:
                f = figures[key]
                print(
                    f"    ({key}) engine start {f['start_seconds']:.1f} s, end to end "
                    f"{f['start_seconds'] + f['seconds']:.1f} s; {f['prefilled_tokens']} prompt "
                    f"tokens computed, {f['reused_tokens']} from vLLM's prefix cache"
                )
        if {"c", "g"} <= set(figures):
            c, g = figures["c"], figures["g"]
            c_total, g_total = c["seconds"] + c["start_seconds"], g["seconds"] + g["start_seconds"]
            print(
                f"c/g replay = {c['seconds'] / g['seconds']:.2f}x  (goal <= 0.8); c/g end to "
                f"end (model load, engine start) = {c_total / g_total:.2f}x  (goal <= 0.5)"
            )
        if {"c", "h"} <= set(figures):
            print(f"c/h replay = {figures['c']['seconds'] / figures['h']['seconds']:.2f}x")
        if {"b", "c"} <= set(figures):
            print(f"b/c = {figures['b']['seconds'] / figures['c']['seconds']:.2f}x  (goal >= 3)")
        if {"a", "c"} <= set(figures):
            print(f"a/c = {figures['a']['seconds'] / figures['c']['seconds']:.2f}x  (goal <= 1.1)")
        if {"c", "d"} <= set(figures):  # hf_rate: the "d" line above
            print(
                f"c/d tokens/s = {rate['c'] / rate['d']:.2f}  (goal >= 0.5; against "
                f"transformers' own decode step: {rate['c'] / hf_rate:.2f})"
            )
        if {"c", "d", "f"} <= set(figures):
            print(
                f"c/f tokens/s = {rate['c'] / rate['f']:.2f}  (1.00: at the compute limit); "
                f"f/d = {rate['f'] / rate['d']:.2f}, the highest c/d this machine allows"
            )
        if {"d", "e"} <= set(figures):
            print(
                f"d/e tokens/s = {rate['d'] / rate['e']:.2f}  (copy {figures['e']['copy_gbs']:.1f}"
                f" GB/s, weights {figures['e']['weights_mb']:.0f} MB)"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
