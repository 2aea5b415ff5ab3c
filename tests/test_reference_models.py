"""A miniature reference model through the same code path as the real ones."""

import json
import os

from transformers import AutoModelForCausalLM, AutoTokenizer

from interrupt_bench.config import get_config
from interrupt_bench.episodes import generate_episode
from interrupt_bench.session import conversation
from local_models.reference import (
    SIZES,
    build_reference_model,
    lm_training_rows,
    reference_model,
    session_examples,
    sft_example,
)


def test_mini_is_a_loadable_hf_directory(mini):
    info = json.loads((mini / "reference_model.json").read_text())
    assert info["size"] == "mini" and info["parameters"] > 0
    model = AutoModelForCausalLM.from_pretrained(mini)
    assert model.config.model_type == "llama"


def test_model_card_holds_what_the_build_recorded(mini):
    import yaml

    card = (mini / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "transformers"
    assert front["datasets"] == ["interrupt-bench/interrupt-bench"]
    info = json.loads((mini / "reference_model.json").read_text())
    assert f"A {info['parameters']:,}-parameter Llama" in card
    assert f"pretrained={mini}" in card
    assert (
        f"| {info['task_steps']} × {info['task_batch']} | {info['final_loss']['tasks']:.3f} |"
        in card
    )
    assert "{{" not in card and "{%" not in card


def test_push_names_the_fix_and_keeps_the_model(mini, tmp_path):
    import shutil
    import subprocess
    import sys

    import local_models.reference as rm

    cache = tmp_path / "cache" / "models"
    cached = cache / f"mini-seed0-v{rm.BUILD_VERSION}"
    shutil.copytree(mini, cached)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    command = [sys.executable, "-m", "local_models.reference", "push", "--size", "mini"]
    env = {**base_env, "INTERRUPT_BENCH_CACHE": str(tmp_path / "cache")}
    no_token = {**env, "HF_TOKEN_PATH": str(tmp_path / "no-token")}
    proc = subprocess.run(
        [*command, "someone/ib-mini"], env=no_token, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "no Hugging Face token found: set HF_TOKEN" in proc.stderr
    retry = "interrupt-bench-reference-models push --size mini --seed 0 someone/ib-mini"
    assert retry in proc.stderr
    assert "pretrained=someone/ib-mini" in (cached / "README.md").read_text()
    unreachable = {**env, "HF_TOKEN": "hf_test", "HF_ENDPOINT": "http://127.0.0.1:9"}
    proc = subprocess.run(
        [*command, "someone/ib-mini"], env=unreachable, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "pushing" in proc.stderr and "the local model is intact" in proc.stderr
    weights = (cached / "model.safetensors").read_bytes()
    assert weights == (mini / "model.safetensors").read_bytes()


def test_tokenizer_round_trips_the_tags_and_renders_a_session(mini):
    tok = AutoTokenizer.from_pretrained(mini)
    for text in [
        "<answer task=12>10.49</answer>",
        '<thinking task="3">so 5 < 7',
        "<question task=1>Hi</question>",
    ]:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    episode = generate_episode(get_config("default"), "test", 0)
    rendered = tok.apply_chat_template(
        conversation(episode, ["", "<answer task=2>1</answer>"]),
        tokenize=False,
        add_generation_prompt=True,
    )
    assert rendered.endswith("<|assistant|>") and "<question task=3>" in rendered


def test_sft_loss_is_on_assistant_tokens_only(mini):
    tok = AutoTokenizer.from_pretrained(mini)
    episode = generate_episode(get_config("default"), "train", 1)
    ids, mask = sft_example(tok, episode, "oracle")
    trained = tok.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=True)
    assert (
        "<answer task=1>" in trained
        and "<question" not in trained
        and "You will be asked" not in trained
    )
    budgets = episode.turn_budgets()
    assert sum(mask) <= sum(budgets) + len(budgets) + 1  # cut text plus end-of-turn tokens


def test_task_phase_packs_question_answer_chats(mini):
    tok = AutoTokenizer.from_pretrained(mini)
    size = SIZES["mini"]
    rows = lm_training_rows(tok, size, seed=0)
    assert rows and all(len(ids) == len(mask) <= size.pack_length for ids, mask in rows)
    ids, mask = rows[0]
    trained = tok.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=True)
    prompt = tok.decode([i for i, m in zip(ids, mask) if not m])
    assert trained.startswith("<answer task=") and "<question" not in trained
    assert prompt.startswith("<|bos|><|user|><question task=") and "</answer>" not in prompt


def test_session_phase_batches_hold_one_config(mini):
    tok = AutoTokenizer.from_pretrained(mini)
    size = SIZES["mini"]
    data = session_examples(tok, size, seed=0)
    assert len(data) % size.session_batch == 0
    for i in range(0, len(data), size.session_batch):
        # the number of user turns tells the config apart (2, 5 or 10 tasks)
        turns = {
            sum(1 for t in ids if t == tok.convert_tokens_to_ids("<|user|>"))
            for ids, _ in data[i : i + size.session_batch]
        }
        assert len(turns) == 1


def test_same_seed_same_weights_and_cache_reuse(mini, tmp_path):
    again = build_reference_model("mini", tmp_path / "again", seed=0, progress=False)
    assert (again / "model.safetensors").read_bytes() == (mini / "model.safetensors").read_bytes()
    cached = reference_model("mini", seed=0, cache_dir=tmp_path / "cache")
    stamp = (cached / "reference_model.json").stat().st_mtime_ns
    assert reference_model("mini", seed=0, cache_dir=tmp_path / "cache") == cached
    assert (cached / "reference_model.json").stat().st_mtime_ns == stamp


def test_a_model_cached_by_another_recipe_is_rebuilt_not_reused(mini, tmp_path, capsys):
    import shutil

    import local_models.reference as rm

    cache = tmp_path / "cache"
    cached = cache / f"mini-seed0-v{rm.BUILD_VERSION}"
    shutil.copytree(mini, cached)
    info = json.loads((cached / "reference_model.json").read_text())
    (cached / "reference_model.json").write_text(json.dumps({**info, "learning_rate": 1.0}))
    assert rm.stale_recipe(cached, "mini", 0) == "learning_rate 1.0 -> 0.003"
    assert reference_model("mini", seed=0, cache_dir=cache) == cached
    assert "was built by another recipe (learning_rate 1.0 -> 0.003)" in capsys.readouterr().err
    assert rm.stale_recipe(cached, "mini", 0) == ""
    assert (cached / "model.safetensors").read_bytes() == (mini / "model.safetensors").read_bytes()
    kept = json.loads((cache / f"{cached.name}.stale" / "reference_model.json").read_text())
    assert kept["learning_rate"] == 1.0  # the old model is kept, not deleted


def test_main_job_on_a_miniature(mini, tmp_path):
    import subprocess
    import sys

    from .conftest import ROOT

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "commands.evaluate",
            "--out",
            str(tmp_path),
            "--model",
            str(mini),
            "--limit",
            "4",
            "--batch-size",
            "4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accuracy" in proc.stdout and "reattempts" in proc.stdout  # lm-eval's table
    png = tmp_path / "interrupt_bench.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
