"""What this machine computes fastest in: the device and dtype evaluation and training pick
when the user leaves them to us (``dtype=auto`` in our front ends)."""

from __future__ import annotations

import functools
from pathlib import Path

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# The dtypes our front ends take (lm-eval's hf model, the commands): auto is best_dtype().
DTYPES = ("auto", "float32", "bfloat16", "float16")


@functools.cache
def _cpuinfo(field: str) -> str:
    """The first ``field : value`` of /proc/cpuinfo, or "" where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith(field)), "")  # fmt: skip


def cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bfloat16 natively (AMX or AVX512-BF16): there bf16
    matmuls run about twice as fast as float32; elsewhere bf16 is emulated and slower."""
    flags = _cpuinfo("flags").split()
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def best_dtype() -> str:
    """``bfloat16`` on GPUs that support it and on CPUs with native bf16, else ``float32``."""
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_bf16() else "float32"


def describe() -> str:
    """One line naming the processor, its cores and whether it multiplies bfloat16
    natively: benchmark figures are only comparable on the same line."""
    import os

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    name = _cpuinfo("model name") or "unknown CPU"
    bf16 = "native bfloat16" if cpu_has_bf16() else "no native bfloat16"
    return f"{name}, {os.cpu_count()} cores, {bf16}, torch {torch.__version__}"
