"""The paired controls: each episode played interrupted, without cuts and as single
tasks, through the real ``lm_eval`` CLI with the reference policies, whose costs are
computed here by hand."""

import json
import subprocess
import sys

import pytest

from interrupt_bench.controls import labelled_sessions
from interrupt_bench.costs import BUDGET_BINS, bin_name, budget_bin, paired_items
from interrupt_bench.dataset import load_episodes
from interrupt_bench.policies import answer_tag, policy_responder
from interrupt_bench.scoring import aggregate, score_episode
from interrupt_bench.session import replay
from lm_eval_tasks import include_path

from .conftest import ROOT

LIMIT = 20


def lost_by_no_resume(episode) -> list[bool]:
    """Task by task, whether no-resume loses it: its only answer tag does not fit in its own
    turn's budget of whitespace tokens (nothing comes back to it later)."""
    return [
        len(answer_tag(k, task.answer).split()) > budget
        for k, (task, budget) in enumerate(zip(episode.tasks, episode.budgets), start=1)
    ]


def run_policy_cli(policy: str, dataset, tasks: str, out) -> dict:
    cmd = [
        sys.executable, "-m", "lm_eval_tasks.cli",
        "--model", "interrupt-bench-policy",
        "--model_args", f"policy={policy},dataset_path={dataset},configs=default+easy",
        "--include_path", include_path(), "--tasks", tasks,
        "--metadata", json.dumps({"dataset_path": str(dataset)}),
        "--limit", str(LIMIT), "--log_samples", "--output_path", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = out.rglob("results_*.json")
    samples = {p.name.split("_", 1)[1].rsplit("_", 1)[0]: p for p in out.rglob("samples_*")}
    return {"results": json.loads(results.read_text())["results"], "samples": samples}


@pytest.mark.parametrize("policy", ["oracle", "no_resume"])
def test_paired_costs_of_the_reference_policies_through_the_cli(small_dataset, tmp_path, policy):
    got = run_policy_cli(
        policy, small_dataset, "interrupt_bench_controls,interrupt_bench_easy_controls", tmp_path
    )
    costs = []
    for task, config in (("interrupt_bench_controls", "default"),
                         ("interrupt_bench_easy_controls", "easy")):  # fmt: skip
        episodes = load_episodes(small_dataset, config, "test", limit=LIMIT)
        metrics = got["results"][task]
        lost = [lost_by_no_resume(e) for e in episodes]
        if policy == "oracle":  # the closing turn's 100 words bring every cut task back
            cut_accuracy = [1.0] * len(episodes)
        else:
            cut_accuracy = [1 - sum(x) / len(x) for x in lost]
        want_cost = sum(1 - a for a in cut_accuracy) / len(episodes)
        assert metrics["accuracy_nocut,strict"] == 1.0
        assert metrics["accuracy_single,strict"] == 1.0
        assert metrics["interleaving_cost,strict"] == 0.0
        assert metrics["accuracy,strict"] == pytest.approx(1 - want_cost)
        assert metrics["interruption_cost,strict"] == pytest.approx(want_cost)
        assert metrics["interruption_cost_answer_rate,strict"] == pytest.approx(want_cost)
        for lo, hi in BUDGET_BINS:
            in_bin = [
                (x if policy == "no_resume" else False)
                for e, lost_e in zip(episodes, lost)
                for x, b in zip(lost_e, e.budgets)
                if budget_bin(b) == bin_name(lo, hi)
            ]
            value = metrics[f"interruption_cost_{bin_name(lo, hi)},strict"]
            if in_bin:
                assert value == pytest.approx(sum(in_bin) / len(in_bin)), bin_name(lo, hi)
        if policy == "no_resume":
            costs.append(want_cost)
            assert metrics["interruption_cost_budget51to100,strict"] == 0.0
        # The paired stderr is the stderr of the per-episode differences.
        diffs = [1 - a for a in cut_accuracy]
        mean = sum(diffs) / len(diffs)
        var = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
        assert metrics["interruption_cost_stderr,strict"] == pytest.approx(
            (var / len(diffs)) ** 0.5
        )
    assert policy == "oracle" or sum(costs) > 0  # some budgets of 0 and 1 in 20 episodes


def test_echo_scores_nothing_through_the_cli(small_dataset, tmp_path):
    """The echo policy (each question said back, then the closing message) through the
    real CLI: the core's numbers, and nothing earned under either filter, interrupted or
    in the controls (pinned: accuracy 0.0 strict and flexible on default and easy)."""
    tasks = ("interrupt_bench", "interrupt_bench_easy", "interrupt_bench_controls",
             "interrupt_bench_easy_controls")  # fmt: skip
    got = run_policy_cli("echo", small_dataset, ",".join(tasks), tmp_path)
    for task, config in zip(tasks[:2], ("default", "easy")):
        episodes = load_episodes(small_dataset, config, "test", limit=LIMIT)
        transcripts = replay(episodes, policy_responder("echo"))
        metrics = got["results"][task]
        for name, flexible in (("strict", False), ("flexible", True)):
            core = aggregate(
                [score_episode(t.episode, t.outputs, t.cut, flexible) for t in transcripts]
            )
            for metric in ("accuracy", "answer_rate", "reattempts", "format_rate"):
                assert metrics[f"{metric},{name}"] == pytest.approx(core[metric]), metric
            assert metrics[f"accuracy,{name}"] == 0.0
            assert metrics[f"answer_rate,{name}"] == 0.0
    for task in tasks[2:]:
        metrics = got["results"][task]
        for name in ("strict", "flexible"):
            for metric in ("accuracy", "accuracy_nocut", "accuracy_single", "answer_rate"):
                assert metrics[f"{metric},{name}"] == 0.0, (task, metric, name)


def test_paired_items_match_the_core_on_replayed_sessions(small_dataset):
    """``paired_items`` on sessions replayed by the core equals the hand computation."""
    for episode in load_episodes(small_dataset, "easy", "test", limit=LIMIT):
        sessions = labelled_sessions(episode, "paired")
        assert [c for c, _ in sessions] == ["interrupted", "nocut"] + ["single"] * 5
        scores = [
            t.score() for t in replay([s for _, s in sessions], policy_responder("no_resume"))
        ]
        from interrupt_bench.scoring import merge_scores

        items = paired_items(episode, scores[0], scores[1], merge_scores(scores[2:]))
        lost = lost_by_no_resume(episode)
        assert items["interruption_cost"] == pytest.approx(sum(lost) / len(lost))
        assert items["accuracy_single"] == items["accuracy_nocut"] == 1.0


def test_budget_bins_cover_every_budget_once():
    for budget in range(0, 8193):
        names = [bin_name(lo, hi) for lo, hi in BUDGET_BINS
                 if budget >= lo and (hi is None or budget <= hi)]  # fmt: skip
        assert names == [budget_bin(budget)]
