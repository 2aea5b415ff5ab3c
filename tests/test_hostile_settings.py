"""Settings that were misread or misreported (issue 35, items 1, 2, 7, 8, 11): Inspect's
``--epochs`` and the ratio metrics, ``metadata.condition`` on a task of the other kind,
bad ``fewshot_placement`` / ``turn_batching``, ``--num_fewshot -1``, and the limits of
``budget_cap`` and ``max_cache_gb``. Each number is checked against a hand computation;
each refusal is one ``interrupt_bench:`` line before any turn, nothing written."""

from __future__ import annotations

import math

import pytest
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from interrupt_bench.config import get_config
from interrupt_bench.controls import check_budget_cap, labelled_sessions
from interrupt_bench.costs import paired_metrics
from interrupt_bench.dataset import load_episodes
from interrupt_bench.episodes import generate_episode
from interrupt_bench.errors import ConfigError
from interrupt_bench.policies import answer_tag
from interrupt_bench.scoring import lm_eval_metrics
from interrupt_bench.session import user_message
from lm_eval_tasks import include_path, settings
from lm_eval_tasks.interrupt_bench import utils as pack
from lm_eval_tasks.scripted_lm import PolicyLM

from .test_hostile_eval import assert_one_line_refusal, lm_eval

LIMIT = 12


# -- 1. Inspect --epochs: the ratios pool over every epoch --------------------------------


def test_inspect_epochs_pool_the_ratio_metrics_over_every_epoch(small_dataset, tmp_path):
    """One easy episode, two epochs, a scripted model: the first time it sees a question
    it answers it right in its own turn and says nothing at the closing turn; the second
    time it is silent in every own turn and answers every task wrongly at the closing
    turn. By hand: each family present is right in one epoch of two (0.5), the resumption
    rate is n/n from the second epoch over 0/0 from the first (1.0), accuracy is the mean
    of 1 and 0. Before, the ratios were the first epoch's alone (1.0 or 0.0, NaN)."""
    from inspect_ai import eval as inspect_eval
    from inspect_ai.model import ModelOutput, ModelUsage

    from inspect_tasks.tasks import interrupt_bench_task

    episodes = load_episodes(small_dataset, "easy", "test")
    episode = next(e for e in episodes if min(e.budgets) > 0 and e.closing_budget > 0)
    asked = {user_message(episode, i): i for i in range(episode.n_turns)}
    seen: dict[int, int] = {}

    def scripted(messages, tools, tool_choice, config) -> ModelOutput:
        turn = asked[messages[-1].text]
        seen[turn] = seen.get(turn, 0) + 1
        first = seen[turn] == 1
        if turn < episode.n_tasks:  # a task's own turn
            text = answer_tag(turn + 1, episode.tasks[turn].answer) if first else ""
        else:  # the closing turn
            text = "" if first else " ".join(answer_tag(k, "zzzq") for k in range(1, turn + 1))
        output = ModelOutput.from_content("mockllm/model", text)
        n = len(text.split())  # given, so mockllm counts no tokens (tiktoken, offline)
        output.usage = ModelUsage(input_tokens=1, output_tokens=n, total_tokens=1 + n)
        return output

    task = interrupt_bench_task(str(small_dataset), "easy", num_fewshot=0)
    (log,) = inspect_eval(
        task, model="mockllm/model", model_args={"custom_outputs": scripted}, epochs=2,
        sample_id=episode.episode_id, max_samples=1, log_dir=str(tmp_path / "logs"),
        display="none",
    )  # fmt: skip
    assert log.status == "success", log.error
    assert set(seen.values()) == {2}  # every turn played once per epoch
    reported = {s.name: s.metrics for s in log.results.scores}
    families = {t.family for t in episode.tasks}
    for family in ("copying", "picking", "comparison"):
        got = reported[f"accuracy_{family}"]["ratio"].value
        assert (got == 0.5) if family in families else math.isnan(got), (family, got)
    assert reported["resumption_rate"]["ratio"].value == 1.0
    assert reported["accuracy"]["mean"].value == 0.5


# -- 2. metadata.condition on a task of the other kind ------------------------------------


def _evaluate(lm, dataset, task, condition):
    manager = TaskManager(
        include_path=include_path(), include_defaults=False,
        metadata={"dataset_path": str(dataset), "condition": condition},
    )  # fmt: skip
    result = simple_evaluate(model=lm, tasks=[task], task_manager=manager, limit=LIMIT,
                             num_fewshot=0)  # fmt: skip
    return {k.split(",")[0]: v for k, v in result["results"][task].items()
            if k.endswith(",strict") and "_stderr," not in k}  # fmt: skip


def test_paired_condition_on_the_benchmark_reports_the_paired_costs(small_dataset):
    """``condition: paired`` on ``interrupt_bench`` (before: every session generated, then
    ``TypeError`` in lm-eval's ``mean`` and nothing written) reports the paired metrics.
    By hand, for the no-resume policy cut in whitespace words: a task is right
    interrupted when its answer tag fits its own budget, always with the cap (256)."""
    episodes = load_episodes(small_dataset, "default", "test", limit=LIMIT)
    got = _evaluate(PolicyLM(episodes, "no_resume"), small_dataset, "interrupt_bench", "paired")
    assert set(got) == set(paired_metrics())
    fits = [
        [len(answer_tag(k, t.answer).split()) <= b for k, (t, b) in
         enumerate(zip(e.tasks, e.budgets), start=1)]
        for e in episodes
    ]  # fmt: skip
    accuracy = sum(sum(f) / len(f) for f in fits) / len(fits)
    assert got["accuracy"] == pytest.approx(accuracy)
    assert got["accuracy_nocut"] == got["accuracy_single"] == 1.0
    assert got["interruption_cost"] == pytest.approx(1 - accuracy)
    assert got["interleaving_cost"] == 0.0
    bins = {"budget0": (0, 0), "budget1to15": (1, 15), "budget16to50": (16, 50),
            "budget51to100": (51, 100), "budget101plus": (101, 10**9)}  # fmt: skip
    for name, (lo, hi) in bins.items():  # tasks whose own budget is in the bin: cut ones
        cut = [not ok for e, f in zip(episodes, fits) for b, ok in zip(e.budgets, f)
               if lo <= b <= hi]  # fmt: skip
        value = got[f"interruption_cost_{name}"]
        assert value == (sum(cut) / len(cut) if cut else pytest.approx(math.nan, nan_ok=True))
    assert got["interruption_cost_budget1to15"] > 0  # some answer tags do not fit
    assert math.isnan(got["resumption_rate"]) or got["resumption_rate"] == 0.0


def test_single_condition_on_a_controls_task_reports_that_condition(small_dataset):
    """``condition: single`` on ``interrupt_bench_easy_controls`` reports the benchmark's
    metrics of the single-task control: every task alone with budget 256, all right."""
    episodes = load_episodes(small_dataset, "easy", "test", limit=LIMIT)
    got = _evaluate(PolicyLM(episodes, "oracle"), small_dataset,
                    "interrupt_bench_easy_controls", "single")  # fmt: skip
    assert set(got) == set(lm_eval_metrics(("copying", "picking", "comparison")))
    assert got["accuracy"] == got["answer_rate"] == got["format_rate"] == 1.0
    assert got["reattempts"] == 0.0


# -- 7. fewshot_placement, turn_batching, condition: one line ------------------------------


@pytest.mark.parametrize(
    ("meta", "named"),
    [
        ({"fewshot_placement": "sideways"}, 'fewshot_placement is "sideways"; use auto'),
        ({"turn_batching": "fast"}, 'turn_batching is "fast"; use auto'),
        ({"condition": "both"}, 'condition is "both"; use interrupted'),
        ({"condition": 3}, "condition is 3; use interrupted"),
    ],
)
def test_unknown_setting_values_are_refused(meta, named):
    with pytest.raises(ConfigError, match=named):
        pack.check_metadata(meta)


@pytest.mark.parametrize(
    ("meta", "named"),
    [
        ({"fewshot_placement": "sideways"}, 'metadata fewshot_placement is "sideways"; use'),
        ({"turn_batching": "fast"}, 'metadata turn_batching is "fast"; use'),
    ],
)
def test_unknown_setting_values_through_the_cli_are_one_line(
    tiny_model, small_dataset, tmp_path, meta, named
):
    out = tmp_path / "out"
    proc = lm_eval(tiny_model, small_dataset, "--output_path", str(out), meta=meta)
    assert_one_line_refusal(proc, named)
    assert not out.exists()


# -- 8. --num_fewshot -1 ------------------------------------------------------------------


def test_negative_num_fewshot_through_the_cli_is_one_line(tiny_model, small_dataset, tmp_path):
    """Before: the run went on with no demonstrations and reported n-shot -1."""
    out = tmp_path / "out"
    proc = lm_eval(tiny_model, small_dataset, "--num_fewshot", "-1", "--output_path", str(out))
    assert_one_line_refusal(proc, "--num_fewshot is -1", "0 or more demonstration sessions")
    assert not out.exists()


# -- 11. the limits of budget_cap and max_cache_gb -----------------------------------------


def test_a_whole_number_float_budget_cap_is_that_number():
    episode = generate_episode(get_config("default"), "test", 0)
    assert check_budget_cap(16.0) == 16 == check_budget_cap("16")
    ((_, nocut),) = labelled_sessions(episode, "nocut", 16.0)
    assert all(b >= 16 for b in nocut.budgets)
    for cap in (16.5, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="whole number of tokens from 1 to 8192"):
            check_budget_cap(cap)


def test_max_cache_gb_refusal_states_the_real_limit():
    with pytest.raises(ConfigError, match="above 0 and below 1048576"):
        settings.check_cache_gb(1e9)
    assert settings.check_cache_gb(1048575) == 1048575.0
