"""Data-parallel evaluation: two gloo processes give the same per-sample scores as one,
with no episode dropped or duplicated, although lm-eval pads the shorter rank."""

import json
import subprocess
import sys

from dataset_builder import build_dataset
from interrupt_bench.config import get_config

from .conftest import ROOT


def _run(nproc: int, dataset, out) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(ROOT / "tests" / "distributed_eval.py"),
        str(dataset),
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def test_two_ranks_match_one(tmp_path):
    dataset = tmp_path / "ds"
    # 11 episodes: rank 0 gets 6, rank 1 gets 5 and one padding request. The train split
    # supplies the task's default demonstration.
    build_dataset(
        dataset,
        [get_config("default")],
        splits=["train", "test"],
        sizes={"train": 20, "test": 11},
        progress=False,
    )
    one = _run(1, dataset, tmp_path / "one.json")
    two = _run(2, dataset, tmp_path / "two.json")
    assert two["world"] == 2
    for task in ("interrupt_bench", "interrupt_bench_control_single"):
        assert len(one["scores"][task]) == len(two["scores"][task]) == 11
        assert one["scores"][task] == two["scores"][task]
    assert one["results"] == two["results"]
    rank1 = json.loads((tmp_path / "two.json.rank1").read_text())
    # Each rank replays only its shard: together as many session turns as one process.
    assert sum(two["calls"]) + sum(rank1["calls"]) == sum(one["calls"])
