"""The Inspect AI front end (``inspect_tasks``) through the real ``inspect eval`` CLI: on
the tiny fixture model (Inspect's ``hf`` provider) and on a scripted OpenAI-compatible
server (``openai-api``), every call carries its turn's budget as ``max_tokens``, and the
logged scores are ``score_episode`` on the logged transcripts; bad input ends in one
clear line with nothing scored."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from inspect_tasks.scorer import metric_names
from inspect_tasks.solver import STORE_KEY
from inspect_tasks.tasks import task_table
from interrupt_bench.costs import paired_metrics
from interrupt_bench.demonstrations import DEFAULT_SHOTS
from interrupt_bench.episodes import Episode
from interrupt_bench.records import episode_items
from interrupt_bench.scoring import TASK_VERSION, lm_eval_metrics
from interrupt_bench.session import user_message
from interrupt_bench.turn_contract import STOP_SEQUENCES
from lm_eval_tasks import TASKS_DIR

from .conftest import ROOT, free_port, samples_file, wait_until_serving

pytest.importorskip("inspect_ai")

SCORER = "interrupt_bench_scorer"


def inspect_eval(*args: str, env: dict[str, str] | None = None, timeout: int = 600):
    """The real ``inspect eval`` CLI (``python -m inspect_ai``), plain display, wide lines."""
    cmd = [sys.executable, "-m", "inspect_ai", "eval", *args, "--display", "plain"]
    full_env = {**os.environ, "COLUMNS": "400", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**full_env, **(env or {})})  # fmt: skip


def read_log(log_dir: Path):
    from inspect_ai.log import read_eval_log

    (path,) = log_dir.glob("*.eval")
    return read_eval_log(str(path), resolve_attachments=True)


def lm_eval_value(item):
    """A per-episode lm-eval result as the Inspect score holds it (ratios as num/den)."""
    if isinstance(item, tuple):
        return item[0] / item[1] if item[1] else math.nan
    return item


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


def check_scores(log) -> None:
    """Every sample's score is the core scorer on its logged sessions, and each reported
    metric aggregates them as lm-eval does (mean, or ratio of sums)."""
    items = {}
    for sample in log.samples:
        sessions = sample.store[STORE_KEY]
        expected = episode_items(sessions, flexible=False)
        got = sample.scores[SCORER].value
        assert set(got) == set(expected)
        assert all(same(got[k], lm_eval_value(v)) for k, v in expected.items()), sample.id
        items[sample.id] = expected
    reported = {s.name: s.metrics for s in log.results.scores}
    names = next(iter(items.values())).keys()
    assert set(reported) == set(names)
    for name in names:
        values = [items[i][name] for i in items]
        if isinstance(values[0], tuple):
            den = sum(v[1] for v in values)
            want = sum(v[0] for v in values) / den if den else math.nan
            assert same(reported[name]["ratio"].value, want), name
        else:
            assert reported[name]["mean"].value == pytest.approx(sum(values) / len(values)), name
            assert "stderr" in reported[name]


def model_calls(sample) -> list:
    return [e for e in sample.events if e.event == "model"]


# ---------------------------------------------------------------------------------------
# The hf provider on the tiny model


# budgets [48, 0, 100] and [39, 33, 100] (the fixture's seed): a budget-0 turn among them
TINY_EPISODES = ("tasks2_budget0to50-test-00018", "tasks2_budget0to50-test-00000")


def test_inspect_eval_on_the_tiny_model(tiny_model, small_dataset, tmp_path):
    """Inspect's ``hf`` provider: each turn that needs the model is one call with its
    budget as ``max_tokens`` and the stop string; budget-0 turns make no call and are
    empty; the demonstrations come before the session; the closing turn comes last."""
    logs = tmp_path / "logs"
    proc = inspect_eval(
        "interrupt_bench/interrupt_bench", "--model", f"hf/{tiny_model}",
        "-M", "do_sample=false", "-M", "device=cpu",
        "-T", f"dataset_path={small_dataset}", "-T", "config=tasks2_budget0to50",
        "--sample-id", ",".join(TINY_EPISODES), "--log-dir", str(logs),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = read_log(logs)
    assert log.status == "success" and log.eval.task == "interrupt_bench/interrupt_bench"
    assert log.eval.task_args["num_fewshot"] == DEFAULT_SHOTS
    checked_zero, demo_lengths = 0, set()
    for sample in log.samples:
        (session,) = sample.store[STORE_KEY]
        episode = Episode.from_row(session["row"])
        budgets, outputs = session["budgets"], session["outputs"]
        asked = [i for i, b in enumerate(budgets) if b > 0]
        calls = model_calls(sample)
        assert [c.config.max_tokens for c in calls] == [budgets[i] for i in asked]
        assert all(c.config.stop_seqs == list(STOP_SEQUENCES) for c in calls)
        for i, call in zip(asked, calls):
            assert call.input[0].role == "system"
            assert call.input[-1].text == user_message(episode, i)  # the closing turn last
            # system, the demonstrations, then this session's turns so far
            demo_lengths.add(len(call.input) - 2 - 2 * i)
            session_part = [m.text for m in call.input[-(2 * i + 1) :]][1::2]
            assert session_part == outputs[:i]  # earlier turns as kept (budget-0: empty)
        for i, b in enumerate(budgets):
            if b == 0:
                assert outputs[i] == "" and session["output_tokens"][i] == 0
                checked_zero += 1
        shown = [m for m in sample.messages if m.role == "assistant"]
        assert [m.metadata["budget"] for m in shown] == budgets
    assert checked_zero, "no budget-0 turn in these episodes; pick others"
    (demos,) = demo_lengths
    assert demos > 0 and demos % 2 == 0  # whole user/assistant demonstration turns
    check_scores(log)


# ---------------------------------------------------------------------------------------
# The scripted OpenAI-compatible server


@pytest.fixture
def scripted_server(tmp_path, request):
    """``tests/scripted_openai.py`` on 127.0.0.1; ``request.param``: its --die-after."""
    port, log = free_port(), tmp_path / "server.jsonl"
    die_after = getattr(request, "param", 0)
    cmd = [sys.executable, "-m", "tests.scripted_openai", "--port", str(port), "--log", str(log),
           "--die-after", str(die_after)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT)
    assert wait_until_serving(f"http://127.0.0.1:{port}/", proc, 30), "the server did not start"
    env = {"SCRIPTED_API_KEY": "none", "SCRIPTED_BASE_URL": f"http://127.0.0.1:{port}/v1"}
    yield proc, env, log
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def served(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize("task", ["interrupt_bench", "interrupt_bench_controls"])
def test_inspect_eval_against_a_scripted_server(scripted_server, small_dataset, tmp_path, task):
    """Through ``openai-api``: the server sees every turn's budget as ``max_tokens`` and the
    stop string; the conversation each turn carries holds the earlier turns' text as the
    server cut it; the scores are the core scorer's on the logged transcripts (the paired
    costs for the controls)."""
    _, env, server_log = scripted_server
    logs = tmp_path / "logs"
    proc = inspect_eval(
        f"interrupt_bench/{task}", "--model", "openai-api/scripted/echo",
        "-T", f"dataset_path={small_dataset}", "--limit", "3", "--log-dir", str(logs), env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = read_log(logs)
    assert log.status == "success"
    requests = served(server_log)
    # (the user message that asks, its budget, the reply and whether the budget cut it)
    sent = sorted(
        (r["messages"][-1]["content"], r["max_tokens"], r["reply"], r["finish"] == "length")
        for r in requests
    )
    logged = []
    for sample in log.samples:
        for session in sample.store[STORE_KEY]:
            episode = Episode.from_row(session["row"])
            for i, budget in enumerate(session["budgets"]):
                if budget > 0:
                    logged.append((user_message(episode, i), budget, session["outputs"][i],
                                   session["cut"][i]))  # fmt: skip
                else:
                    assert session["outputs"][i] == ""
    assert sent == sorted(logged)
    assert all(r["stop"] == list(STOP_SEQUENCES) for r in requests)
    assert any(r["finish"] == "length" for r in requests)  # some budgets cut the script
    for r in requests:  # each request carries the kept text of the turns before it
        replies = {x["reply"] for x in requests}
        # a demonstration's reply may be cut inside its tag ("<answer")
        assert all(m["content"] in replies | {""} or "<answer" in m["content"]
                   for m in r["messages"] if m["role"] == "assistant")  # fmt: skip
    if task == "interrupt_bench_controls":
        assert {s["condition"] for s in log.samples[0].store[STORE_KEY]} == {
            "interrupted", "nocut", "single"}  # fmt: skip
    check_scores(log)


# ---------------------------------------------------------------------------------------
# Bad input: one clear line, nothing scored


def _one_line(proc) -> str:
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    return lines[0]


def test_missing_dataset_is_one_line_and_no_log(scripted_server, tmp_path):
    _, env, server_log = scripted_server
    logs = tmp_path / "logs"
    proc = inspect_eval(
        "interrupt_bench/interrupt_bench", "--model", "openai-api/scripted/echo",
        "-T", f"dataset_path={tmp_path / 'nowhere'}", "--log-dir", str(logs), env=env,
    )  # fmt: skip
    assert proc.returncode == 1
    line = _one_line(proc)
    assert re.fullmatch(
        r"interrupt_bench: dataset directory \S+nowhere does not exist; build .*", line
    )
    assert not list(logs.glob("*.eval")) and not served(server_log)


def test_corrupt_row_is_one_line_and_no_log(scripted_server, small_dataset, tmp_path):
    import shutil

    _, env, server_log = scripted_server
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    (shard,) = (data / "default").glob("test-*.parquet")
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[2]["budgets"][0] = 2147483647
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    logs = tmp_path / "logs"
    proc = inspect_eval(
        "interrupt_bench/interrupt_bench", "--model", "openai-api/scripted/echo",
        "-T", f"dataset_path={data}", "--log-dir", str(logs), env=env,
    )  # fmt: skip
    assert proc.returncode == 1
    line = _one_line(proc)
    assert line.startswith(f"interrupt_bench: corrupt episode row '{rows[2]['episode_id']}'")
    assert "budget above 8192" in line and "rebuild" in line
    assert not list(logs.glob("*.eval")) and not served(server_log)


@pytest.mark.parametrize(
    ("param", "line"),
    [
        ("condition=nocuts", "interrupt_bench: unknown -T condition='nocuts'; use one of"),
        ("budget_cap=0", "interrupt_bench: -T budget_cap is 0; the controls raise every budget"),
    ],
)
def test_bad_task_parameter_is_one_line(scripted_server, small_dataset, tmp_path, param, line):
    _, env, _ = scripted_server
    proc = inspect_eval(
        "interrupt_bench/interrupt_bench", "--model", "openai-api/scripted/echo",
        "-T", f"dataset_path={small_dataset}", "-T", param,
        "--log-dir", str(tmp_path / "logs"), env=env,
    )  # fmt: skip
    assert proc.returncode == 1
    assert _one_line(proc).startswith(line), _one_line(proc)


@pytest.mark.parametrize("scripted_server", [5], indirect=True)
def test_server_dying_mid_run_scores_nothing(scripted_server, small_dataset, tmp_path):
    """The server exits at its 5th request: the run ends with the error line naming the
    turn, the log's status is ``error``, and no sample holds a score."""
    proc_server, env, server_log = scripted_server
    logs = tmp_path / "logs"
    proc = inspect_eval(
        "interrupt_bench/interrupt_bench", "--model", "openai-api/scripted/echo",
        "-T", f"dataset_path={small_dataset}", "--limit", "4", "--max-retries", "1",
        "--timeout", "10", "--log-dir", str(logs), env=env,
    )  # fmt: skip
    assert proc_server.wait(timeout=30) != 0  # it did die
    output = proc.stdout + proc.stderr
    failed = r"ModelFailed: interrupt_bench: the model failed at turn \d+ of default-test-\d+ "
    assert re.search(failed + r"\(.*\)\. Nothing was scored", output), output[-3000:]
    log = read_log(logs)
    assert log.status == "error" and log.results is None
    assert all(not s.scores for s in log.samples)
    assert len(served(server_log)) == 4


# ---------------------------------------------------------------------------------------
# The same facts as the lm-eval task pack


def _lm_eval_yaml(name: str) -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    return yaml.load((TASKS_DIR / name).read_text(), Loader=Loader)


def test_tasks_mirror_the_lm_eval_pack():
    """Every lm-eval task over the test split has an Inspect task of the same name, with
    the same config, condition, default shots, version, stop string and metrics."""
    template = _lm_eval_yaml("_interrupt_bench_template_yaml")
    assert template["num_fewshot"] == DEFAULT_SHOTS
    assert str(template["metadata"]["version"]) == TASK_VERSION
    assert list(STOP_SEQUENCES) == template["generation_kwargs"]["until"]
    table = task_table()
    for path in TASKS_DIR.glob("interrupt_bench*.yaml"):
        spec = _lm_eval_yaml(path.name)
        if "group" in spec or spec.get("validation_split"):
            continue
        condition = (spec.get("metadata") or {}).get("condition", "interrupted")
        assert table[spec["task"]] == (spec["dataset_name"], condition), spec["task"]
        names = [m["metric"] for m in spec.get("metric_list") or template["metric_list"]]
        assert list(metric_names(spec["dataset_name"], condition == "paired")) == names
    assert set(paired_metrics()) <= set(metric_names("default", True))
    assert set(lm_eval_metrics()) == set(metric_names("default", False))


def test_the_entry_point_names_the_namespace():
    """``inspect eval interrupt_bench/TASK`` loads the entry point named
    ``interrupt_bench``, which registers every task under that namespace."""
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="inspect_ai") if e.name == "interrupt_bench"]
    assert ep.value == "inspect_tasks._registry"
    from inspect_ai._util.registry import registry_info

    from inspect_tasks.tasks import TASKS

    assert {registry_info(t).name for t in TASKS.values()} == {
        f"interrupt_bench/{name}" for name in task_table()
    }


# ---------------------------------------------------------------------------------------
# One number, two harnesses


def _lm_eval_sessions(out: Path) -> dict[str, dict]:
    """Episode id -> the interrupted session lm-eval logged (``--log_samples``, strict)."""
    path = samples_file(out, "interrupt_bench")
    sessions = {}
    for line in path.read_text().splitlines():
        sample = json.loads(line)
        if sample["filter"] == "strict":
            (session,) = json.loads(sample["resps"][0][0])["sessions"]
            sessions[session["episode_id"]] = session
    return sessions


@pytest.mark.real_model
def test_smollm2_scores_the_same_through_inspect_and_lm_eval(small_dataset, tmp_path):
    """SmolLM2-135M-Instruct, greedy, float32, one demonstration, the same episodes:
    Inspect's ``hf`` provider and lm-eval's ``hf`` path (the session engine) generate the
    same turns, so every episode scores the same in both harnesses."""
    from local_models import registry as models

    from .test_lm_eval_cli import run_lm_eval

    name, n = "smollm2-135m-instruct", 4
    if not models.is_cached(name):
        pytest.skip(f"{name} is not cached: interrupt-bench-models fetch {name}")
    path = models.model_path(name)
    proc = run_lm_eval(
        "--model", "hf", "--model_args", f"pretrained={path},dtype=float32", "--device", "cpu",
        "--tasks", "interrupt_bench", "--apply_chat_template", "--limit", str(n),
        "--metadata", json.dumps({"dataset_path": str(small_dataset)}), "--batch_size", str(n),
        "--log_samples", "--output_path", str(tmp_path / "lm_eval"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = _lm_eval_sessions(tmp_path / "lm_eval")
    logs = tmp_path / "logs"
    proc = inspect_eval(
        "interrupt_bench/interrupt_bench", "--model", f"hf/{path}", "-M", "do_sample=false",
        "-M", "dtype=float32", "-M", "device=cpu", "-T", f"dataset_path={small_dataset}",
        "--limit", str(n), "--log-dir", str(logs),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = read_log(logs)
    assert len(log.samples) == len(theirs) == n
    for sample in log.samples:
        (ours,) = sample.store[STORE_KEY]
        other = theirs[sample.id]
        assert ours["outputs"] == other["outputs"], sample.id
        got = sample.scores[SCORER].value
        assert all(same(got[k], other["metrics"][k]) for k in other["metrics"]), sample.id
