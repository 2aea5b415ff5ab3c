import os
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from hypothesis import settings

import local_models  # noqa: F401  (first: hides torch extensions that cannot load here)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from dataset_builder import build_dataset
from interrupt_bench.config import get_config

# Property tests check properties, not speed: Hypothesis's per-example deadline fails on a
# loaded machine (two xdist workers beside subprocesses) and says nothing about the code.
settings.register_profile("interrupt_bench", deadline=None)
settings.load_profile("interrupt_bench")

SMALL = {"train": 30, "validation": 10, "test": 20}
ROOT = Path(__file__).resolve().parents[1]
SMALL_CONFIGS = ("default", "tasks2_budget0to50", "tasks10_budget50to200", "easy")


def samples_file(out: Path, task: str) -> Path:
    """The ``--log_samples`` file lm-eval wrote for exactly ``task`` under ``out``:
    ``samples_{task}_{date}.jsonl``, the date lm-eval's ISO stamp (no underscore). A glob
    ``samples_{task}_*`` would also match a task whose name extends ``task``
    (``interrupt_bench`` matches ``interrupt_bench_controls``), and which one came first
    would depend on directory order."""
    pattern = re.compile(rf"samples_{re.escape(task)}_\d{{4}}-\d\d-\d\dT[\d.-]+\.jsonl")
    found = [p for p in out.rglob("samples_*.jsonl") if pattern.fullmatch(p.name)]
    assert len(found) == 1, f"expected one samples file of {task} under {out}, found {found}"
    return found[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a test's server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, proc: subprocess.Popen, seconds: float) -> bool:
    """True once ``url`` answers; False when ``proc`` exits or ``seconds`` pass first."""
    deadline = time.time() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return True
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                return False
            time.sleep(0.2)


@pytest.fixture(autouse=True)
def _isolated_hf_cache(tmp_path_factory, monkeypatch):
    """Each test's datasets cache is its own, so no test sees another's cached files."""
    cache = tmp_path_factory.mktemp("hf_cache")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.setenv("HF_HOME", str(cache / "home"))


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "interrupt_bench"
    build_dataset(out, [get_config(n) for n in SMALL_CONFIGS], sizes=SMALL, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained Llama with a trained tokenizer and a strict chat template."""
    from local_models.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def mini(tmp_path_factory) -> Path:
    """The miniature reference model, built through the same code path as the real ones."""
    from local_models.reference import build_reference_model

    return build_reference_model(
        "mini", tmp_path_factory.mktemp("ref") / "mini", seed=0, progress=False
    )
