"""The attention of the training loss, alone: forward and backward of SDPA on one micro
batch's shapes, with the mask the trainer passes beside the ways around it.

The loss phase runs every session's own ids on top of the shared prefix's cached keys and
values; on the CPU, that attention is 40% of the phase (``bench_training.py --profile``).
This prints, for SmolLM2-135M's shape (9 query heads, 64 dimensions each) and a micro batch
of ROWS sessions of NEW ids on PREFIX cached ones, the seconds per layer of:

  mask         SDPA with the explicit causal mask (what transformers passes with a cache);
  no mask      SDPA attending everywhere (the floor: nothing masked, nothing skipped);
  lower right  SDPA with ``causal_lower_right`` (a kernel that skips masked blocks would
               be faster than ``no mask`` here);
  float32      the explicit mask, in float32 (what autocast saves);

and the TFLOP/s each reaches, against a decoder-shaped matmul's on the same threads.

    .venv/bin/python benchmarks/bench_attention.py [--rows 4] [--new 400] [--prefix 400]
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    import torch
    from bench_training import matmul_rate
    from torch.nn.attention.bias import causal_lower_right
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    from local_models.hardware import describe

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--new", type=int, default=400)
    parser.add_argument("--prefix", type=int, default=400)
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    b, h, n, total, d = args.rows, args.heads, args.new, args.new + args.prefix, args.head_dim
    mask = torch.ones(n, total, dtype=torch.bool).tril(args.prefix)

    def seconds(dtype: torch.dtype, attn_mask) -> float:
        q = torch.randn(b, h, n, d, dtype=dtype, requires_grad=True)
        k = torch.randn(b, h, total, d, dtype=dtype, requires_grad=True)
        v = torch.randn(b, h, total, d, dtype=dtype, requires_grad=True)
        sdpa(q, k, v, attn_mask=attn_mask).float().sum().backward()  # warm-up
        start = time.perf_counter()
        for _ in range(args.repeats):
            sdpa(q, k, v, attn_mask=attn_mask).float().sum().backward()
        return (time.perf_counter() - start) / args.repeats

    matmul = matmul_rate(torch.bfloat16, args.threads)
    # forward 2 matmuls (QK^T, PV), backward 5 of the same size: 7 x 2 x b h n total d
    flops = 14 * b * h * n * total * d
    print(f"machine: {describe()}")
    print(f"{b} rows x {h} heads x {n} new ids on {args.prefix} cached, {d} per head; "
          f"forward + backward, seconds per layer (mean of {args.repeats})")  # fmt: skip
    rows = [
        ("mask (bf16)", torch.bfloat16, mask),
        ("no mask (bf16)", torch.bfloat16, None),
        ("lower right (bf16)", torch.bfloat16, causal_lower_right(n, total)),
        ("mask (float32)", torch.float32, mask),
    ]
    for name, dtype, m in rows:
        s = seconds(dtype, m)
        print(f"  {name:<20}{s:8.4f} s  {flops / s / 1e12:6.3f} TFLOP/s")
    print(f"  {'bf16 matmul':<20}{'':8}    {matmul / 1e12:6.3f} TFLOP/s (2048 x 576 x 1536)")


if __name__ == "__main__":
    main()
