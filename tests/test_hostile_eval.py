"""The lm-eval front end under hostile settings: settings that could be silently misread
(a string ``until``, a zero ``budget_cap``, ``do_sample=True,temperature=0``), values
that would end in a raw traceback, a cache shared between models, and ``--predict_only``.
The CLI tests run the real ``lm_eval`` CLI on the tiny model; every refusal is one line on
stderr, before any turn is generated."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from interrupt_bench.config import get_config
from interrupt_bench.controls import check_budget_cap, labelled_sessions
from interrupt_bench.episodes import generate_episode
from interrupt_bench.errors import ConfigError
from lm_eval_tasks import figures, include_path
from lm_eval_tasks.backends import check_generation_settings
from lm_eval_tasks.settings import RunSettings
from local_models.engine import Sampling

from .conftest import ROOT, samples_file

TASK = "interrupt_bench_tasks2_budget0to50"  # two questions, budgets up to 50: quick turns
GENERATING = "interrupt_bench turns"  # the progress bar of the turns being generated


def lm_eval(model: Path, data: Path, *args: str, meta: dict | None = None):
    """``lm_eval`` on the tiny model, one episode of TASK, no demonstrations."""
    cmd = [
        sys.executable, "-m", "lm_eval", "--include_path", include_path(),
        "--model", "hf", "--model_args", f"pretrained={model},dtype=float32", "--device", "cpu",
        "--tasks", TASK, "--metadata", json.dumps({"dataset_path": str(data), **(meta or {})}),
        "--limit", "1", "--num_fewshot", "0", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def assert_one_line_refusal(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 1, no traceback, nothing generated; the last line names the problem."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert GENERATING not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupt_bench: "), last
    for needle in needles:
        assert needle in last, last
    return last


def logged_sessions(out: Path) -> list[dict]:
    return list(figures.logged_sessions(samples_file(out, TASK)))


# -- a string `until` ----------------------------------------------------------------------


def test_a_string_until_is_one_stop_string():
    settings = {"chat": True, "generation_kwargs": {"until": "</answer>"}}
    assert RunSettings(**settings).stop_strings() == ["</answer>"]
    assert RunSettings(**{**settings, "chat": False}).stop_strings() == ["</answer>", "\nUser:"]
    assert RunSettings(chat=True, generation_kwargs={}).stop_strings() == ["<question"]
    with pytest.raises(ConfigError, match="until takes a string or a list of strings"):
        RunSettings(chat=True, generation_kwargs={"until": 3}).stop_strings()


def test_gen_kwargs_until_string_through_the_cli(tiny_model, small_dataset, tmp_path):
    """``--gen_kwargs until=User:`` parses to the string ``"User:"``; read as its
    characters, every turn would end at the first ``:``, which this untrained model
    writes at once: turns came back empty."""
    out = tmp_path / "out"
    proc = lm_eval(
        tiny_model, small_dataset, "--gen_kwargs", "until=User:",
        "--log_samples", "--output_path", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = [o for s in logged_sessions(out) for o in s["outputs"] if o]
    assert outputs, "every turn came back empty"
    assert any(set(o) & set("User:") for o in outputs), outputs
    assert not any("User:" in o for o in outputs)


# -- --use_cache keyed on the model --------------------------------------------------------


@pytest.fixture(scope="module")
def variants(tiny_model, tmp_path_factory) -> dict[str, dict]:
    """HFLM arguments of the tiny model and of models that must not share its cache
    entries: another model with the same tokenizer and template, the same weights in
    bfloat16, and the same weights with a LoRA adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = tmp_path_factory.mktemp("variants")
    other = base / "other"
    shutil.copytree(tiny_model, other)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    model.save_pretrained(other)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter = base / "adapter"
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    get_peft_model(fresh, lora).save_pretrained(adapter)
    return {
        "base": {"pretrained": str(tiny_model), "dtype": "float32"},
        "other model": {"pretrained": str(other), "dtype": "float32"},
        "bfloat16": {"pretrained": str(tiny_model), "dtype": "bfloat16"},
        "peft": {"pretrained": str(tiny_model), "dtype": "float32", "peft": str(adapter)},
    }


@pytest.mark.parametrize("turn_batching", ["auto", "exact"], ids=["engine", "generate_until"])
def test_use_cache_never_hands_one_models_turns_to_another(
    variants, small_dataset, tmp_path, turn_batching
):
    """One ``--use_cache`` DB, the base model first: the same model again reads every
    turn back (no forward pass), and each other model generates its own turns (before,
    they all got the base model's, exactly)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    meta = {"dataset_path": str(small_dataset), "turn_batching": turn_batching}
    manager = TaskManager(include_path=include_path(), include_defaults=False, metadata=meta)
    db = str(tmp_path / "cache")

    def forward_passes(args: dict) -> int:
        lm = HFLM(**args, device="cpu", batch_size=4)
        calls = []
        lm.model.get_input_embeddings().register_forward_hook(lambda *_: calls.append(1))
        simple_evaluate(
            model=lm, tasks=[TASK], task_manager=manager, limit=1, num_fewshot=0, use_cache=db
        )
        return len(calls)

    assert forward_passes(variants["base"]) > 0
    assert forward_passes(variants["base"]) == 0  # every turn read back from the DB
    others = ("other model", "bfloat16", "peft") if turn_batching == "auto" else ("peft",)
    for name in others:
        assert forward_passes(variants[name]) > 0, f"{name} was served the base model's turns"


# -- budget_cap ----------------------------------------------------------------------------


@pytest.mark.parametrize("cap", [0, -5, True, "abc", None, 1.5, 10_000])
def test_a_budget_cap_that_is_no_control_is_refused(cap):
    episode = generate_episode(get_config("default"), "test", 0)
    with pytest.raises(ConfigError, match="whole number of tokens from 1 to 8192"):
        check_budget_cap(cap)
    with pytest.raises(ConfigError, match="budget_cap"):  # every front end: the core checks
        labelled_sessions(episode, "nocut", cap)


def test_a_valid_budget_cap_raises_every_budget():
    episode = generate_episode(get_config("default"), "test", 0)
    assert check_budget_cap("300") == 300
    ((_, nocut),) = labelled_sessions(episode, "nocut", 300)
    assert all(b >= 300 for b in nocut.budgets)


def test_budget_cap_text_through_the_cli_is_one_line(tiny_model, small_dataset):
    proc = lm_eval(tiny_model, small_dataset, meta={"budget_cap": "abc", "condition": "nocut"})
    assert_one_line_refusal(proc, 'metadata budget_cap is "abc"', "from 1 to 8192")


@pytest.mark.parametrize("value", ["abc", 0, -1, True])
def test_max_cache_gb_that_is_not_a_positive_number_is_one_line(tiny_model, small_dataset, value):
    proc = lm_eval(tiny_model, small_dataset, meta={"max_cache_gb": value})
    assert_one_line_refusal(proc, f"metadata max_cache_gb is {json.dumps(value)}", "above 0")


def test_a_kv_bound_too_small_for_one_session_is_named(tiny_model, small_dataset, tmp_path):
    """The engine seats a session only when its turn fits the bound; one that cannot fit
    even alone ends the run with one line naming the bound and how to raise it, and no
    results."""
    out = tmp_path / "out"
    proc = lm_eval(tiny_model, small_dataset, "--output_path", str(out),
                   meta={"max_cache_gb": 1e-7})  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupt_bench: session engine: "), last
    assert "even alone, over the bound" in last and '{"max_cache_gb": GIB}' in last, last
    assert not list(tmp_path.rglob("results_*.json"))


# -- sampling settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"do_sample": True, "temperature": 0}, "do_sample=False for greedy"),
        ({"do_sample": True, "temperature": 0.0, "top_k": 5}, "temperature 0 is greedy"),
        ({"do_sample": True, "top_k": -3}, "top_k takes a whole number >= 0"),
        ({"do_sample": True, "top_k": 2.5}, "top_k takes a whole number >= 0"),
        ({"do_sample": True, "temperature": "abc"}, "temperature takes a number"),
        ({"do_sample": True, "temperature": -1}, "temperature takes a number >= 0"),
        ({"do_sample": True, "temperature": float("nan")}, "a finite number"),
        ({"do_sample": True, "top_p": 0}, "top_p takes a number in (0, 1]"),
        ({"do_sample": True, "top_p": 1.5}, "top_p takes a number in (0, 1]"),
        ({"do_sample": "yes"}, "do_sample takes True or False"),
    ],
)
def test_sampling_values_the_engine_cannot_honour_are_refused(kwargs, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace("]", r"\]")):
        Sampling.from_generation_kwargs(kwargs)


def test_sampling_values_are_checked_on_every_path():
    """Through ``generate_until`` (``turn_batching: exact`` or another backend) the
    backend samples, but a value of the wrong type is refused all the same."""
    settings = {"generation_kwargs": {"do_sample": True, "temperature": "abc"}}
    with pytest.raises(ConfigError, match="temperature takes a number"):
        check_generation_settings([RunSettings(**settings)], None)
    beams = RunSettings(generation_kwargs={"num_beams": 2})
    with pytest.raises(ConfigError, match="vLLM session backend"):
        check_generation_settings([beams], "vLLM session backend")
    sampled = Sampling.from_generation_kwargs({"do_sample": True})
    assert not sampled.greedy and sampled.temperature == 1.0  # no temperature: 1, as HF
    greedy = RunSettings(generation_kwargs={"do_sample": False, "top_k": 0})
    check_generation_settings([greedy], None)


@pytest.mark.parametrize(
    ("gen_kwargs", "named"),
    [
        ("do_sample=True,temperature=0", "do_sample=True with temperature=0"),
        ("do_sample=True,temperature=abc", "temperature='abc' is not valid"),
    ],
)
def test_sampling_settings_through_the_cli_are_one_line(
    tiny_model, small_dataset, gen_kwargs, named
):
    proc = lm_eval(tiny_model, small_dataset, "--gen_kwargs", gen_kwargs)
    assert_one_line_refusal(proc, named)


# -- --predict_only ------------------------------------------------------------------------


def test_predict_only_writes_the_transcripts_and_no_scores(tiny_model, small_dataset, tmp_path):
    out = tmp_path / "out"
    proc = lm_eval(tiny_model, small_dataset, "--predict_only", "--output_path", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (session,) = logged_sessions(out)
    assert len(session["outputs"]) == len(session["budgets"]) > 0
    assert all(turn["prompt"] for turn in session["turns"] if turn["budget"] > 0)
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"][TASK]
    metrics = {key.split(",")[0] for key in results if "," in key}  # "metric,filter"
    assert metrics == {"bypass", "bypass_stderr"}, results


# -- the --log_samples file of one task ----------------------------------------------------


@pytest.mark.parametrize("order", [sorted, lambda paths: sorted(paths, reverse=True)])
def test_a_tasks_samples_file_is_found_by_its_exact_name(tmp_path, monkeypatch, order):
    """``samples_interrupt_bench_*`` also matches ``samples_interrupt_bench_controls_*``:
    the file found must not depend on the order the directory lists them in."""
    from .test_vllm import sessions

    run = tmp_path / "out" / "model"
    run.mkdir(parents=True)
    for task, episode in (("interrupt_bench", "mine"), ("interrupt_bench_controls", "other")):
        resp = json.dumps({"sessions": [{"episode_id": episode}]})
        line = json.dumps({"resps": [[resp]], "filter": "strict"})
        (run / f"samples_{task}_2026-01-02T03-04-05.678901.jsonl").write_text(line + "\n")
    listed = Path.rglob
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: iter(order(listed(self, pattern))))
    out = tmp_path / "out"
    assert samples_file(out, "interrupt_bench").name.startswith("samples_interrupt_bench_2026")
    assert samples_file(out, "interrupt_bench_controls").name.startswith(
        "samples_interrupt_bench_controls_2026"
    )
    assert sessions(out, "interrupt_bench") == [{"episode_id": "mine"}]
    assert sessions(out, "interrupt_bench_controls") == [{"episode_id": "other"}]
