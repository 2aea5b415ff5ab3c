"""A played session as both harnesses keep it, and what one episode's sessions score.

lm-eval logs each episode's sessions as JSON (``--log_samples``) and Inspect keeps them
in the sample's store; both score them with :func:`episode_items` under the same metric
names (``EpisodeScore.items``, or the paired costs for the controls), so the two report
the same numbers for the same turns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from interrupt_bench.config import families_of
from interrupt_bench.costs import paired_items, split_by_condition
from interrupt_bench.episodes import Episode
from interrupt_bench.scoring import merge_scores, score_episode
from interrupt_bench.session import Transcript


def session_record(
    condition: str, played: Transcript, prompts: Mapping[int, str] | None = None
) -> dict[str, Any]:
    """One played session: its condition, row, budgets, outputs and cuts. With
    ``prompts`` (turn index -> the prompt sent; lm-eval's log), every turn in full too:
    its message, prompt, tokens, format problems, and the verdicts and metrics."""
    episode = played.episode
    if prompts is None:
        return {
            "condition": condition,
            "episode_id": episode.episode_id,
            "row": episode.to_row(),
            "budgets": episode.turn_budgets(),
            "outputs": list(played.outputs),
            "cut": list(played.cut),
            "output_tokens": list(played.n_tokens),
        }
    record = {"condition": condition, **played.to_dict()}
    for turn in record["turns"]:
        turn["prompt"] = prompts.get(turn["turn"] - 1)
    record["outputs"] = list(played.outputs)
    record["cut"] = list(played.cut)
    record["budgets"] = episode.turn_budgets()
    record["row"] = episode.to_row()
    return record


def episode_items(sessions: Sequence[Mapping[str, Any]], flexible: bool) -> dict[str, Any]:
    """What one episode's played sessions contribute to the metrics (lm-eval's
    ``process_results``), scored strictly or ``flexible``: the benchmark's items, or,
    when the sessions hold all three conditions, the paired costs of
    :mod:`interrupt_bench.costs`. The first session is the episode itself."""
    by_condition = split_by_condition(
        (
            s.get("condition", "interrupted"),
            score_episode(Episode.from_row(s["row"]), s["outputs"], s["cut"], flexible=flexible),
        )
        for s in sessions
    )
    merged = {c: merge_scores(scores) for c, scores in by_condition.items()}
    row = sessions[0]["row"]
    if len(merged) > 1:
        episode = Episode.from_row(row)
        return paired_items(episode, merged["interrupted"], merged["nocut"], merged["single"])
    (score,) = merged.values()
    return score.items(families_of(row["config"]))
