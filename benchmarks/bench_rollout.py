"""Training rollouts on a tiny Llama on the CPU: sampled tokens per second on the session
engine at temperature 1 and greedy, one training step's time on 10-task sessions, and
peak memory. (The engine against the per-turn floor on a real model:
``bench_real_model.py``.)

    .venv/bin/python benchmarks/bench_rollout.py [--episodes 8] [--hidden-size 64]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


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
    from local_models.tiny_model import build_tiny_llama
    from training.rollouts import sample_sessions

    torch.set_num_threads(2)
    model_dir = build_tiny_llama(
        Path(tempfile.mkdtemp()) / "m", hidden_size=args.hidden_size, layers=2, heads=4
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    episodes = generate_split(get_config("tasks10_budget0to100"), "train", args.episodes)

    timings = {}
    for greedy in (False, True):
        start = time.perf_counter()
        rollouts = sample_sessions(model, tokenizer, episodes, greedy=greedy, seed=0)
        timings[greedy] = (time.perf_counter() - start, rollouts.generated_tokens)
    responder = rollouts
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
    for greedy, (seconds, tokens) in timings.items():
        name = "greedy" if greedy else "temperature 1"
        print(f"rollouts, {name:<14}: {seconds:6.2f} s, {tokens / seconds:7.0f} sampled tokens/s")
    print(f"policy-gradient forward+backward over all sessions: {step_s:.2f} s")
    print(f"peak resident memory: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
