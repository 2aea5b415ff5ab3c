"""The user-facing commands under hostile but realistic use:
``interrupt-bench-reproduce`` keys every row by what defines it, so ``--resume`` never
shows a row computed under other settings and no two rows overwrite each other; both
commands refuse bad arguments with one line before the dataset build or any model load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from commands import evaluate, reproduce
from commands.model_spec import parse_model
from commands.resume import row_identity
from dataset_builder import build_dataset
from interrupt_bench.config import get_config

from .conftest import ROOT

# --- rows keyed by everything that defines them -------------------------------------


@pytest.fixture(scope="module")
def quiet_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny Llama rewired to end every turn at once: attention and MLP outputs are
    zero, so the last hidden state is the last token's embedding, and one embedding
    dimension (the only one the final norm keeps) is largest for EOS. A table row then
    costs one forward pass per turn through the real lm-eval ``hf`` path."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("models") / "quiet"
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.model.embed_tokens.weight
        embeddings[:, 0] = 1.0
        embeddings[model.config.eos_token_id, 0] = 100.0
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
    model.save_pretrained(out)
    for path in tiny_model.iterdir():
        if path.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(path, out / path.name)
    return out


@pytest.fixture(scope="module")
def two_best_adapters(quiet_model, tmp_path_factory) -> list[Path]:
    """Two LoRA adapters saved as ``best`` by two training runs, as reinforce.py names them."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("runs")
    adapters = []
    for run in ("run-a", "run-b"):
        model = AutoModelForCausalLM.from_pretrained(quiet_model)
        lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
        get_peft_model(model, lora).save_pretrained(root / run / "best")
        adapters.append(root / run / "best")
    return adapters


@pytest.fixture(scope="module")
def two_episodes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "interrupt_bench"
    build_dataset(out, [get_config("default")], splits=["test"], sizes={"test": 2}, progress=False)
    return out


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("table2_samples_*.jsonl")}


def test_reproduce_rows_are_keyed_by_everything_that_defines_them(
    quiet_model, two_best_adapters, two_episodes, tmp_path, capsys
):
    out = tmp_path / "out"
    common = ["--dataset-path", str(two_episodes), "--batch-size", "4", "--out", str(out)]
    a, b = two_best_adapters
    models = [
        f"{quiet_model},num_fewshot=0,dtype=float32",
        f"{quiet_model},num_fewshot=0,dtype=bfloat16",
        f"pretrained={quiet_model},peft={a},num_fewshot=0,dtype=float32",
        f"pretrained={quiet_model},peft={b},num_fewshot=0,dtype=float32",
    ]
    flags = [arg for model in models for arg in ("--model", model)]
    assert reproduce.main(["table2", *flags, "--limit", "1", *common]) == 0
    rows = json.loads((out / "table2.json").read_text())
    table = (out / "table2.md").read_text().splitlines()
    # Four models, four rows (two filters each): none overwrote another.
    assert len(rows) == 4 and len(table) == 4 + 2 * 4, table
    assert len(_mtimes(out)) == 4
    labels = [line.split(" | ")[0].removeprefix("| ") for line in table[4::2]]
    assert len(set(labels)) == 4
    assert "dtype=float32" in labels[0] and "dtype=bfloat16" in labels[1]
    assert str(a) in labels[2] and str(b) in labels[3] and "best + LoRA" in labels[2]
    assert {row["row"]["limit"] for row in rows.values()} == {1}
    assert {row["sample_len"] for row in rows.values()} == {1}

    # The same four with --resume and the same limit: every row kept, nothing run again.
    before = _mtimes(out)
    assert reproduce.main(["table2", *flags, "--limit", "1", "--resume", *common]) == 0
    assert _mtimes(out) == before and json.loads((out / "table2.json").read_text()) == rows

    # --resume without --limit: the one-episode row is not "all test episodes"; it runs again.
    capsys.readouterr()
    assert reproduce.main(["table2", "--model", models[0], "--resume", *common]) == 0
    row = next(iter(json.loads((out / "table2.json").read_text()).values()))
    assert row["row"]["limit"] is None and row["sample_len"] == 2
    title = (out / "table2.md").read_text().splitlines()[0]
    assert "(all 2 test episodes)" in title, title


def test_a_rebuilt_dataset_or_a_retrained_adapter_is_a_new_row(
    quiet_model, two_best_adapters, two_episodes, tmp_path
):
    """What the resume check compares, without running a model: the dataset's build record
    and the adapter's files are part of a row's identity, as are dtype and the limit."""
    spec = parse_model(f"pretrained={quiet_model},peft={two_best_adapters[0]}")
    row = row_identity(spec, "interrupt_bench_controls", two_episodes, 1)
    assert row == row_identity(spec, "interrupt_bench_controls", two_episodes, 1)
    assert row != row_identity(spec, "interrupt_bench_controls", two_episodes, None)
    other = parse_model(f"pretrained={quiet_model},peft={two_best_adapters[0]},dtype=float16")
    assert row != row_identity(other, "interrupt_bench_controls", two_episodes, 1)

    copy = tmp_path / "data"
    shutil.copytree(two_episodes, copy)
    (copy / "build_info.json").write_text(
        (copy / "build_info.json").read_text().replace('"test": 2', '"test": 3')
    )
    moved = row_identity(spec, "interrupt_bench_controls", copy, 1)
    assert moved["dataset"]["build_info"] != row["dataset"]["build_info"]

    retrained = tmp_path / "best"
    shutil.copytree(two_best_adapters[0], retrained)
    again = parse_model(f"pretrained={quiet_model},peft={retrained}")
    stamp = again.identity()["weights"]["peft"]
    weights = next(retrained.glob("adapter_model.*"))
    weights.write_bytes(weights.read_bytes() + b"\0")  # a new save under the same name
    assert again.identity()["weights"]["peft"] != stamp


# --- one clear line before any build or model load ----------------------------------


def _one_line(capsys, code: int, message: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert message in err[0], err[0]
    return err[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["table2", "--model", "pretrained=x,foo"], "'foo' is not KEY=VALUE; write a model name"),
        (["table2", "--model", "org/model,,dtype=float32"], "'' is not KEY=VALUE"),
        (["table2", "--model", "dtype=float32"], "names no model"),
        (["table2", "--model", "m,dtype=float32,dtype=bfloat16"], "dtype is given twice"),
        (["table2", "--model", "m,num_fewshot=-1"], "num_fewshot=-1 is not a count"),
        (["table2", "--model", "m,num_fewshot=two"], "num_fewshot=two is not a count"),
        (["table2", "--model", "m,chat=maybe"], "chat=maybe is not a boolean"),
        (["table2", "--model", "m,placement=middle"], "placement=middle is not one of"),
        (["table2", "--model", "m,dtype=float7"], "dtype=float7 is not one of auto, float32"),
        (["table2", "--model", "/nonexistent/model"], "no such model directory"),
        (["table2", "--model", "not-cached-here"], "nor a Hub model in the local cache"),
        (["table2", "--model", "m", "--limit", "0"], "--limit is 0; give 1 or more"),
        (["table1", "--model", "m", "--model", "n"], "table1 takes one --model"),
        (["fewshot", "--model", "m,num_fewshot=2"], "fewshot sets num_fewshot itself"),
        (["table2"], "table2 needs --model"),
        (["figure1", "--log", "/nonexistent/train_log.jsonl"], "no such file; pass the train_log"),
        (["figure1"], "figure1 needs --log OUTPUT_DIR/train_log.jsonl"),
    ],
)
def test_reproduce_refuses_bad_arguments_in_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data, out = tmp_path / "data", tmp_path / "out"
    code = reproduce.main([*argv, "--dataset-path", str(data), "--out", str(out)])
    _one_line(capsys, code, message)
    assert not data.exists() and not out.exists()  # refused before the build and any run


def test_reproduce_refuses_a_file_as_out_and_a_directory_as_log(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = reproduce.main(["table2", "--model", "m", "--out", str(blocker)])
    _one_line(capsys, code, f"--out {blocker} is a file; pass a directory")
    code = reproduce.main(["figure1", "--log", str(tmp_path), "--out", str(tmp_path / "o")])
    _one_line(capsys, code, f"is a directory; pass the run's log file, {tmp_path}/train_log.jsonl")


def test_reproduce_refuses_one_model_twice(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    argv = ["table2", "--model", str(model), "--model", f"pretrained={model}"]
    data = tmp_path / "data"
    code = reproduce.main([*argv, "--dataset-path", str(data), "--out", str(tmp_path / "o")])
    _one_line(capsys, code, "is given twice with the same settings; give it once")
    assert not data.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--limit", "0"], "--limit is 0; give 1 or more test episodes per tier"),
        (["--limit", "-5"], "--limit is -5"),
        (["--dtype", "float7"], "--dtype float7 is not one of auto, float32, bfloat16, float16"),
        (["--num-fewshot", "-1"], "--num-fewshot is -1; give 0 or more demonstration sessions"),
        (["--model", "no-such-model"], "unknown model 'no-such-model'; known models:"),
    ],
)
def test_eval_refuses_bad_arguments_before_the_build(argv, message, tmp_path, capsys):
    out = tmp_path / "build"
    code = evaluate.main([*argv, "--out", str(out)])
    assert _one_line(capsys, code, message).startswith("[main] error: ")
    assert not out.exists()  # no dataset built, no model fetched


def test_eval_refuses_a_file_as_out_before_the_build(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = evaluate.main(["--out", str(blocker)])
    _one_line(capsys, code, f"{blocker} is a file; pass a directory")
    nested = tmp_path / "build"
    (nested / "interrupt_bench").parent.mkdir()
    (nested / "interrupt_bench").write_text("x")
    code = evaluate.main(["--out", str(nested)])
    _one_line(capsys, code, f"{nested / 'interrupt_bench'} is a file")


@pytest.mark.parametrize(
    ("command", "argv", "message"),
    [
        ("reproduce", ["table2", "--model", "pretrained=x,foo"], "'foo' is not KEY=VALUE"),
        ("evaluate", ["--dtype", "float7"], "--dtype float7 is not one of"),
    ],
)
def test_the_installed_commands_print_one_line(command, argv, message, tmp_path):
    """The console scripts' own process: exit code 2, one stderr line, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", f"commands.{command}", *argv, "--out", str(tmp_path / "o")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "o").exists()


def _not_built(*args, **kwargs):
    raise AssertionError("the dataset was built for a command that should have been refused")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "is not a model directory: it has no config.json, no weights (model.safetensors"),
        ({"config.json": "{}", "tokenizer.json": "{}"}, "it has no weights (model.safetensors"),
        ({"config.json": "{}", "model.safetensors": "x"}, "it has no tokenizer (tokenizer.json"),
        (
            {"adapter_config.json": '{"base_model_name_or_path": "org/base"}',
             "adapter_model.safetensors": "x", "tokenizer.json": "{}"},
            "holds a LoRA adapter (adapter_config.json), not a whole model; evaluate it on its "
            "base model with `interrupt-bench-reproduce table2 --model pretrained=org/base,peft=",
        ),
    ],
)  # fmt: skip
def test_eval_refuses_a_directory_that_holds_no_model_before_the_build(
    files, message, tmp_path, capsys, monkeypatch
):
    """``--model DIR`` of a directory transformers cannot load a model from: one line
    before the dataset build (~20 s) and lm-eval's traceback, nothing written."""
    import dataset_builder

    monkeypatch.setattr(dataset_builder, "build_dataset", _not_built)
    model = tmp_path / "not-a-model"
    model.mkdir()
    for name, text in files.items():
        (model / name).write_text(text)
    out = tmp_path / "build"
    code = evaluate.main(["--model", str(model), "--out", str(out)])
    line = _one_line(capsys, code, message)
    assert line.startswith(f"[main] error: --model {model} "), line
    assert not out.exists()


def test_eval_takes_the_model_directories_this_project_writes(tiny_model, mini):
    """save_pretrained's directories (the tiny Llama, a reference model) pass the check."""
    from local_models.registry import model_dir_problem

    assert model_dir_problem(tiny_model) is None
    assert model_dir_problem(mini) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"step": 1}\n{"step": 2, "rew\n{"step": 3}\n', "line 2 is not JSON"),
        ('{"step": 1}\n{"step": 2, "rew', "line 2 is not JSON (cut off: a write that did not"),
        ('{"step": 1}\n["a list"]\n', "line 2 is not a training step's record (step is None)"),
        ('{"step": 1}\n{"reward": 0.5}\n', "line 2 is not a training step's record"),
        ("", "holds no training steps; pass the train_log.jsonl of a run"),
        ("\n\n", "holds no training steps"),
    ],
)
def test_figure1_refuses_a_bad_or_empty_log_naming_file_and_line(text, message, tmp_path, capsys):
    log = tmp_path / "train_log.jsonl"
    log.write_text(text)
    out = tmp_path / "out"
    code = reproduce.main(["figure1", "--log", str(log), "--out", str(out)])
    line = _one_line(capsys, code, message)
    assert str(log) in line, line
    assert not out.exists()  # nothing written
