"""Greedy validation and the collapse guard.

Validation samples one greedy session per validation episode (each rank its shard),
gathers every rank's episode scores and reduces them by name: the benchmark's metrics
through :func:`interrupt_bench.scoring.aggregate`, so a validation accuracy means what an
lm-eval accuracy means, and the training-only ones (reward, cut resumption) as means over
the same episodes. The collapse guard compares a step's entropy and validation reward
with the config's bounds and the best reward so far.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from interrupt_bench.scoring import EpisodeScore, aggregate, mean_stderr
from training.config import TrainConfig
from training.policy import sample_transcripts
from training.rewards import RewardWeights, cut_resumed_rate, reward
from training.state import Run


def greedy_metrics(run: Run) -> dict[str, float]:
    """Greedy sessions on the validation episodes (this rank's shard), over all ranks."""
    from accelerate.utils import gather_object

    accelerator = run.accelerator
    shard = run.val[accelerator.process_index :: accelerator.num_processes]
    with accelerator.autocast():
        transcripts, _ = sample_transcripts(
            accelerator.unwrap_model(run.model), run.tokenizer, shard, run.cfg, greedy=True,
            shots=run.shots, vllm=run.vllm,
        )  # fmt: skip
    episodes = [episode_record(t.score(), t.cut, run.weights) for t in transcripts]
    return validation_metrics(gather_object(episodes))


def episode_record(
    score: EpisodeScore, cut: Sequence[bool | None], weights: RewardWeights
) -> dict[str, Any]:
    """One validation episode as the ranks exchange it: its score and the two numbers
    that need the transcript's cut flags."""
    return {
        "score": score,
        "reward": reward(score, weights, cut),
        "cut_resumption": cut_resumed_rate(score, cut),
        "cut_resumption_correct": cut_resumed_rate(score, cut, correct_only=True),
    }


def validation_metrics(episodes: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The ``val_*`` log fields of :func:`episode_record` rows from every rank; 0 where
    nothing was counted (no episodes, or no task left open for the resumption rate), so
    the log holds numbers only."""
    core = aggregate([e["score"] for e in episodes])
    out = {
        "val_reward": mean_stderr(e["reward"] for e in episodes)[0],
        "val_accuracy": core["accuracy"],
        "val_reattempts": core["reattempts"],
        # re-attempts that came back to an open task (the rest re-tag finished ones)
        "val_resumption_rate": core["resumption_rate"],
        # of the re-attempted tasks, the share that were open (copying a fixed closing
        # turn scores how often its tasks happen to be open)
        "val_reattempt_precision": core["reattempt_precision"],
        # tasks the budget cut and a later turn answered, per task (deferrals excluded)
        "val_cut_resumption": mean_stderr(e["cut_resumption"] for e in episodes)[0],
        # of those, answered right
        "val_cut_resumption_correct": mean_stderr(e["cut_resumption_correct"] for e in episodes)[0],
    }
    return {k: 0.0 if math.isnan(v) else v for k, v in out.items()}


def collapse_reason(record: dict[str, Any], best_val: float | None, cfg: TrainConfig) -> str | None:
    """Why the guard acts on this step's ``record`` (entropy out of its bounds, validation
    reward fallen more than ``max_val_drop`` below ``best_val``, the best so far), or None."""
    if cfg.min_entropy and record["entropy"] < cfg.min_entropy:
        return f"entropy {record['entropy']:.3f} fell below min_entropy {cfg.min_entropy}"
    if cfg.max_entropy and record["entropy"] > cfg.max_entropy:
        return f"entropy {record['entropy']:.3f} rose above max_entropy {cfg.max_entropy}"
    if best_val is not None and record["val_reward"] < best_val - cfg.max_val_drop:
        return (
            f"validation reward {record['val_reward']:.3f} fell more than "
            f"{cfg.max_val_drop} below the best {best_val:.3f}"
        )
    return None
