"""Run the task pack with the oracle PolicyLM on every rank of a torch.distributed (gloo)
job and write rank 0's per-sample scores as JSON. Started by tests/test_lm_eval_distributed.py
through ``torchrun --nproc_per_node N``; with N = 1 it is the single-process reference."""

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from interrupt_bench.dataset import load_episodes
from lm_eval_tasks import include_path
from lm_eval_tasks.scripted_lm import PolicyLM


def main(dataset: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    episodes = load_episodes(dataset, "default", "test")
    lm = PolicyLM(episodes, "oracle", rank=rank, world_size=world)
    manager = TaskManager(
        include_path=include_path(),
        include_defaults=False,
        metadata={"dataset_path": dataset},
    )
    result = simple_evaluate(
        model=lm,
        tasks=["interrupt_bench", "interrupt_bench_control_single"],
        task_manager=manager,
        log_samples=True,
    )
    if rank == 0:
        scores = {
            task: {
                s["doc"]["episode_id"]: [
                    s[m] for m in ("accuracy", "reattempts", "format_rate", "resumption_rate")
                ]
                for s in samples
            }
            for task, samples in result["samples"].items()
        }
        results = {
            t: {k: v for k, v in r.items() if "," in k} for t, r in result["results"].items()
        }
        Path(out).write_text(
            json.dumps(
                {"scores": scores, "results": results, "world": world, "calls": lm.calls},
                sort_keys=True,
            )
        )
    else:
        assert result is None
        Path(f"{out}.rank{rank}").write_text(json.dumps({"calls": lm.calls}))
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    main(sys.argv[1], sys.argv[2])
