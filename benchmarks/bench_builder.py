"""Episode generation throughput and the wall time of a full dataset build.

    .venv/bin/python benchmarks/bench_builder.py

Goal (issue 2): every config and split built in under 10 s on a 2-core machine."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from dataset_builder import build_dataset
from interrupt_bench.config import CONFIGS
from interrupt_bench.episodes import generate_split
from interrupt_bench.policies import policy_responder
from interrupt_bench.session import replay

GOAL_SECONDS = 10.0


def main() -> None:
    print(f"{'config':24} {'episodes/s':>11} {'tasks/s':>10}")
    for config in CONFIGS.values():
        n = 2000
        start = time.perf_counter()
        episodes = generate_split(config, "train", n)
        seconds = time.perf_counter() - start
        print(f"{config.name:24} {n / seconds:11.0f} {n * config.n_tasks / seconds:10.0f}")

    episodes = generate_split(CONFIGS["default"], "test", 500)
    start = time.perf_counter()
    scores = [t.score() for t in replay(episodes, policy_responder("oracle"))]
    seconds = time.perf_counter() - start
    print(
        f"\noracle replay + scoring: {len(scores) / seconds:.0f} episodes/s (default, 500 episodes)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = build_dataset(Path(tmp) / "ds", list(CONFIGS.values()), progress=False)
        seconds = time.perf_counter() - start
    print(
        f"full build: {report.episodes} episodes, {len(report.files)} parquet files, "
        f"{seconds:.2f} s wall (goal {GOAL_SECONDS:.0f} s, ratio {seconds / GOAL_SECONDS:.2f})"
    )


if __name__ == "__main__":
    main()
