"""Training rollouts on a tiny Llama on the CPU: tokens per second, one training step's
time, KV-cache continuation against re-encoding the history every turn on 10-task
sessions (goal >= 2x), and peak memory.

    .venv/bin/python benchmarks/bench_rollout.py [--episodes 8] [--hidden-size 64]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--hidden-size", type=int, default=64)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from interrupt_bench.config import get_config
    from interrupt_bench.episodes import generate_split
    from interrupt_bench.rollout import SamplingResponder
    from interrupt_bench.session import replay
    from interrupt_bench.tiny_model import build_tiny_llama

    torch.set_num_threads(2)
    model_dir = build_tiny_llama(
        Path(tempfile.mkdtemp()) / "m", hidden_size=args.hidden_size, layers=2, heads=4
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    episodes = generate_split(get_config("tasks10_budget0to100"), "train", args.episodes)

    timings = {}
    for kv_cache in (True, False):
        torch.manual_seed(0)
        responder = SamplingResponder(model, tokenizer, episodes, greedy=True, kv_cache=kv_cache)
        start = time.perf_counter()
        replay(episodes, responder)
        seconds = time.perf_counter() - start
        timings[kv_cache] = (seconds, responder.generated_tokens, responder)
    (kv_s, kv_tokens, responder), (re_s, re_tokens, _) = timings[True], timings[False]
    lengths = [len(s.ids) for s in responder.sessions]

    # One policy-gradient step on those sessions (forward + backward over every token).
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    )
    peft_model.train()
    width = max(lengths)
    ids = torch.full((len(lengths), width), tokenizer.pad_token_id)
    attn = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, s in enumerate(responder.sessions):
        ids[i, : len(s.ids)] = torch.tensor(s.ids)
        attn[i, : len(s.ids)] = 1
    start = time.perf_counter()
    logits = peft_model(input_ids=ids, attention_mask=attn).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    (-(logp * attn[:, 1:]).sum() / attn.sum()).backward()
    step_s = time.perf_counter() - start

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.episodes} sessions of 10 tasks (tasks10_budget0to100), "
        f"tiny Llama hidden {args.hidden_size}, "
        f"{sum(lengths)} tokens in all, longest {max(lengths)}"
    )
    print(f"KV-cache continuation : {kv_s:6.2f} s, {kv_tokens / kv_s:7.0f} sampled tokens/s")
    print(f"re-encode every turn  : {re_s:6.2f} s, {re_tokens / re_s:7.0f} sampled tokens/s")
    print(f"speed-up {re_s / kv_s:.2f}x (goal >= 2x); identical tokens: {kv_tokens == re_tokens}")
    print(f"policy-gradient forward+backward over all sessions: {step_s:.2f} s")
    print(f"peak resident memory: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
