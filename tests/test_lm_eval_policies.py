"""The task pack driven through lm-eval's Python API by the reference policies (exact
numbers the core predicts), a garbage model, and bad data sources."""

import json
import math
import random

import pytest
from lm_eval import simple_evaluate
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager

from interrupt_bench.dataset import load_episodes
from interrupt_bench.demonstrations import DEFAULT_SHOTS
from interrupt_bench.errors import DatasetError
from interrupt_bench.policies import policy_responder
from interrupt_bench.scoring import aggregate
from interrupt_bench.session import replay
from lm_eval_tasks import include_path
from lm_eval_tasks.scripted_lm import PolicyLM, WhitespaceTokenizer

TASKS_DIR = include_path()
LIMIT = 12


def _evaluate(lm, dataset, tasks, **kwargs):
    manager = TaskManager(
        include_path=TASKS_DIR, include_defaults=False, metadata={"dataset_path": str(dataset)}
    )
    return simple_evaluate(
        model=lm, tasks=tasks, task_manager=manager, log_samples=True, limit=LIMIT, **kwargs
    )


def _sample_metrics(result, task):
    return {s["doc"]["episode_id"]: s for s in result["samples"][task]}


@pytest.mark.parametrize(
    ("task", "config"),
    [
        ("interrupt_bench", "default"),
        ("interrupt_bench_tasks10_budget50to200", "tasks10_budget50to200"),
    ],
)
@pytest.mark.parametrize("policy", ["oracle", "no_resume", "close_open", "close_last"])
def test_policies_score_exactly_what_the_core_predicts(small_dataset, task, config, policy):
    episodes = load_episodes(small_dataset, config, "test", limit=LIMIT)
    result = _evaluate(PolicyLM(episodes, policy), small_dataset, [task])
    predicted = {
        t.episode.episode_id: t.score() for t in replay(episodes, policy_responder(policy))
    }
    samples = _sample_metrics(result, task)
    assert set(samples) == set(predicted)
    for episode_id, score in predicted.items():
        s = samples[episode_id]
        assert s["accuracy"] == score.accuracy
        assert s["reattempts"] == score.reattempts
        assert s["format_rate"] == score.format_rate
        assert tuple(s["resumption_rate"]) == (score.resumption_num, score.resumption_den)
        assert tuple(s["reattempt_precision"]) == (score.reattempts_open, score.reattempts)
    metrics = result["results"][task]
    expected = aggregate(list(predicted.values()))
    for name in ("accuracy", "reattempts", "answer_rate", "format_rate", "resumption_rate",
                 "reattempt_precision"):  # fmt: skip
        got, want = metrics[f"{name},strict"], expected[name]
        assert got == pytest.approx(want) or (math.isnan(got) and math.isnan(want)), name
    if policy == "no_resume":
        assert metrics["reattempts,strict"] == 0.0
    if policy in ("oracle", "close_open"):  # whitespace budgets are ample for answer tags
        assert metrics["accuracy,strict"] == 1.0
        precision = metrics["reattempt_precision,strict"]  # they go back to open tasks only
        assert precision == 1.0 or math.isnan(precision)


def test_oracle_with_ample_budgets_scores_one_and_controls_run(small_dataset):
    episodes = load_episodes(small_dataset, "default", "test", limit=LIMIT)
    lm = PolicyLM(episodes, "oracle")
    tasks = ["interrupt_bench_control_nocut", "interrupt_bench_control_single"]
    result = _evaluate(lm, small_dataset, tasks)
    for task in tasks:
        assert result["results"][task]["accuracy,strict"] == 1.0
        assert result["results"][task]["format_rate,strict"] == 1.0
    single = result["samples"]["interrupt_bench_control_single"][0]
    sessions = json.loads(single["resps"][0][0])["sessions"]
    assert len(sessions) == single["doc"]["n_tasks"]
    assert all(len(s["turns"]) == 1 and s["turns"][0]["budget"] == 256 for s in sessions)


def test_turn_synchronous_batching(small_dataset):
    episodes = load_episodes(small_dataset, "default", "test", limit=LIMIT)
    lm = PolicyLM(episodes, "oracle")
    _evaluate(lm, small_dataset, ["interrupt_bench"])
    # One generate_until call per turn index (6 turns: 5 questions + closing), each
    # holding every session whose budget at that turn is above zero.
    budgets = [ep.turn_budgets() for ep in episodes]
    expected = [sum(b[t] > 0 for b in budgets) for t in range(6)]
    assert lm.calls == [n for n in expected if n]


def test_samples_hold_the_whole_transcript(small_dataset):
    episodes = load_episodes(small_dataset, "default", "test", limit=LIMIT)
    result = _evaluate(PolicyLM(episodes, "oracle"), small_dataset, ["interrupt_bench"])
    sample = result["samples"]["interrupt_bench"][0]
    session = json.loads(sample["resps"][0][0])["sessions"][0]
    assert [t["budget"] for t in session["turns"]] == sample["doc"]["budgets"] + [
        sample["doc"]["closing_budget"]
    ]
    for turn in session["turns"]:
        assert {
            "user",
            "budget",
            "prompt",
            "output",
            "cut",
            "output_tokens",
            "format_problems",
        } <= set(turn)
        if turn["budget"] > 0:
            assert turn["prompt"].endswith("Assistant:") and turn["user"] in turn["prompt"]
        else:
            assert turn["output"] == "" and turn["prompt"] is None
    assert [v["task_id"] for v in session["verdicts"]] == [1, 2, 3, 4, 5]
    assert all("correct" in v and "final_answer" in v for v in session["verdicts"])


class GarbageLM(LM):
    """Returns junk, empty strings and tags for tasks that do not exist."""

    def __init__(self):
        super().__init__()
        self.rng = random.Random(0)
        self.tokenizer = WhitespaceTokenizer()

    def generate_until(self, requests, disable_tqdm=False):
        junk = [
            "",
            "\x00\ufffd<<<>>>",
            "<answer task=999>5</answer>",
            "<answer task=0>x</answer>",
            "<thinking task=abc>",
            "</answer></thinking>",
            "<answer task=-1>",
            "🙂" * 50,
        ]
        return [self.rng.choice(junk) for _ in requests]

    def loglikelihood(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError


def test_garbage_model_is_scored_not_crashed_on(small_dataset):
    result = _evaluate(GarbageLM(), small_dataset, ["interrupt_bench"])
    metrics = result["results"]["interrupt_bench"]
    assert metrics["accuracy,strict"] == 0.0 and metrics["answer_rate,strict"] == 0.0
    assert 0.0 <= metrics["format_rate,strict"] < 1.0


def test_missing_dataset_is_a_clear_error(tmp_path):
    manager = TaskManager(
        include_path=TASKS_DIR,
        include_defaults=False,
        metadata={"dataset_path": str(tmp_path / "none")},
    )
    with pytest.raises(DatasetError, match="dataset_builder build --out DIR"):
        simple_evaluate(model=GarbageLM(), tasks=["interrupt_bench"], task_manager=manager, limit=2)


def test_use_cache_reuses_every_turn(small_dataset, tmp_path):
    """What ``--use_cache DB`` does: lm-eval's CachingLM passes ``interrupt_session``
    through, the backend stores every turn's generation in DB, and the hook reads each
    turn back from DB before asking the model."""
    from lm_eval.api.model import CachingLM
    from lm_eval.evaluator import evaluate

    episodes = load_episodes(small_dataset, "default", "test", limit=LIMIT)
    db = str(tmp_path / "cache.db")

    def run(policy_lm):
        manager = TaskManager(
            include_path=TASKS_DIR,
            include_defaults=False,
            metadata={"dataset_path": str(small_dataset)},
        )
        tasks = manager.load(["interrupt_bench"])
        result = evaluate(
            lm=CachingLM(policy_lm, db), task_dict=tasks, limit=LIMIT, log_samples=True
        )
        return [s["resps"] for s in result["samples"]["interrupt_bench"]]

    first_lm, again_lm = PolicyLM(episodes, "oracle"), PolicyLM(episodes, "oracle")
    first = run(first_lm)
    again = run(again_lm)
    assert sum(first_lm.calls) > 0 and again_lm.calls == []
    assert first == again


def test_default_shot_and_configs_whose_budgets_never_cut(small_dataset):
    """The task's default shot count is the core's; in tasks10_budget50to200 no oracle
    answer is ever cut, so its demonstrations show the format only (and still run)."""
    episodes = load_episodes(small_dataset, "tasks10_budget50to200", "test", limit=LIMIT)
    task = "interrupt_bench_tasks10_budget50to200"
    result = _evaluate(PolicyLM(episodes, "oracle"), small_dataset, [task])
    assert result["n-shot"][task] == DEFAULT_SHOTS
    assert result["results"][task]["accuracy,strict"] == 1.0


def test_sweep_group_runs_every_grid_config(tmp_path):
    from dataset_builder import build_dataset
    from interrupt_bench.config import CONFIGS

    dataset = tmp_path / "all"
    build_dataset(
        dataset, list(CONFIGS.values()), splits=["test"], sizes={"test": 3}, progress=False
    )
    episodes = [e for name in CONFIGS for e in load_episodes(dataset, name, "test")]
    result = _evaluate(
        PolicyLM(episodes, "oracle"),
        dataset,
        ["interrupt_bench_sweep", "interrupt_bench_easy_sweep", "interrupt_bench_easy"],
        num_fewshot=0,
    )  # a test-only dataset: no train split to draw demonstrations from
    grid = [name for name in CONFIGS if name != "default"]
    assert {f"interrupt_bench_{name}" for name in grid} <= set(result["results"])
    assert all(result["results"][f"interrupt_bench_{n}"]["accuracy,strict"] == 1.0 for n in grid)


def test_fewshot_without_a_train_split_stops_before_any_model_call(tmp_path):
    from dataset_builder import build_dataset
    from interrupt_bench.config import get_config

    dataset = tmp_path / "test-only"
    build_dataset(dataset, [get_config("default")], splits=["test"], sizes={"test": 3},
                  progress=False)  # fmt: skip
    episodes = load_episodes(dataset, "default", "test")
    lm = PolicyLM(episodes, "oracle")
    with pytest.raises(DatasetError, match="needs the config's train split, which is missing"):
        _evaluate(lm, dataset, ["interrupt_bench"], num_fewshot=1)
    assert lm.calls == []


def test_oracle_with_demonstrations_scores_as_without(small_dataset):
    """Demonstrations change the prompt, never the scoring: the oracle, which ignores
    the prompt, scores the same with 0 and 2 shots, and its prompts hold the shots."""
    episodes = load_episodes(small_dataset, "default", "test", limit=LIMIT)
    zero = _evaluate(PolicyLM(episodes, "oracle"), small_dataset, ["interrupt_bench"],
                     num_fewshot=0)  # fmt: skip
    two = _evaluate(PolicyLM(episodes, "oracle"), small_dataset, ["interrupt_bench"],
                    num_fewshot=2)  # fmt: skip
    assert two["n-shot"]["interrupt_bench"] == 2
    assert (
        two["results"]["interrupt_bench"]["accuracy,strict"]
        == (zero["results"]["interrupt_bench"]["accuracy,strict"])
    )
    sample = two["samples"]["interrupt_bench"][0]
    turn = next(t for t in json.loads(sample["resps"][0][0])["sessions"][0]["turns"] if t["prompt"])
    assert turn["prompt"].count("No more questions will come.") == 2


def test_out_of_interval_budget_is_named_before_any_model_call(tmp_path):
    """A row edited to a budget its config never draws is named by the task pack before
    any model call, rather than reaching the model and ending as a SessionReplayError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataset_builder import build_dataset
    from interrupt_bench.config import get_config

    dataset = tmp_path / "ds"
    build_dataset(dataset, [get_config("default")], splits=["test"], sizes={"test": 3},
                  progress=False)  # fmt: skip
    shard = next((dataset / "default").glob("test-*.parquet"))
    table = pq.read_table(shard)
    budgets = table.column("budgets").to_pylist()
    budgets[1][0] = 2147483647
    table = table.set_column(table.schema.get_field_index("budgets"), table.schema.field(
        "budgets"), pa.array(budgets, type=table.schema.field("budgets").type))  # fmt: skip
    pq.write_table(table, shard)
    lm = PolicyLM(load_episodes(dataset, "default", "test", limit=1), "oracle")
    with pytest.raises(DatasetError, match=r"default-test-00001.*budget above 8192"):
        _evaluate(lm, dataset, ["interrupt_bench"])
    assert lm.calls == []


def test_registering_our_models_keeps_lm_evals_own():
    """Importing a module that registers a model before anything imported
    ``lm_eval.models`` must leave lm-eval's models (``hf``) in its registry."""
    import subprocess
    import sys

    code = (
        "import lm_eval_tasks.scripted_lm\n"
        "from lm_eval.api.registry import get_model\n"
        "print(get_model('hf').__name__, get_model('interrupt-bench-policy').__name__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["HFLM", "PolicyLM"]
