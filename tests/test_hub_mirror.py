"""The Hub read path for real, offline: the built dataset as a git repository laid out as
the builder pushes it (README card with its ``configs:``, ``CONFIG/SPLIT-*.parquet``,
``build_info.json``), served through the Hub's read API by olah on 127.0.0.1, with
``HF_ENDPOINT`` pointed at it. ``datasets.load_dataset``, the ``lm_eval`` CLI with no
``dataset_path`` (the task pack's default repo id) and Inspect with ``-T dataset_path=ORG/NAME``
each give what the same run gives on the local directory."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_builder import build_dataset
from interrupt_bench.config import get_config
from interrupt_bench.dataset import HUB_DATASET_ID
from lm_eval_tasks import include_path

from .conftest import ROOT, free_port, wait_until_serving

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("olah") is None or importlib.util.find_spec("git") is None,
    reason="olah is not installed (it comes with the dev extra: pip install -e '.[dev]'); "
    "it serves a git repository through the Hub's read API on 127.0.0.1",
)

EPISODES = 2


@pytest.fixture(scope="module")
def hub_mirror(tmp_path_factory):
    """(endpoint, local directory): a small dataset built here, committed as the git repo
    ``datasets/interrupt-bench/interrupt-bench`` of an offline olah mirror."""
    root = tmp_path_factory.mktemp("hub")
    data = root / "data"
    build_dataset(data, [get_config("default")], sizes={"train": 30, "validation": 2,
                  "test": EPISODES}, progress=False)  # fmt: skip
    repo = root / "mirrors" / "datasets" / HUB_DATASET_ID
    shutil.copytree(data, repo)
    git = ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@localhost"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "dataset"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    port = free_port()
    (root / "olah.toml").write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{root / "cache"}"\n'
        f'mirrors-path = ["{root / "mirrors"}"]\n\n[accessibility]\noffline = true\n'
    )
    log = (root / "olah.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "olah.server", "--config", str(root / "olah.toml")],
        cwd=root, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        ready = wait_until_serving(f"{endpoint}/api/datasets/{HUB_DATASET_ID}/revision/main",
                                   server, 60)  # fmt: skip
        assert ready, (root / "olah.log").read_text()[-3000:]
        yield endpoint, data
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _env(endpoint: str) -> dict[str, str]:
    """The Hub online, at the mirror; the Xet client off (the mirror serves plain files)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    }
    return {**env, "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1", "COLUMNS": "400"}


def _run(cmd: list[str], endpoint: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=_env(endpoint))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_load_dataset_from_the_mirror_is_the_local_directory(hub_mirror):
    endpoint, data = hub_mirror
    code = (
        "import datasets, json, sys\n"
        "for split in ('train', 'validation', 'test'):\n"
        f"    hub = datasets.load_dataset({HUB_DATASET_ID!r}, 'default', split=split)\n"
        "    local = datasets.load_dataset(sys.argv[1], 'default', split=split)\n"
        "    assert hub.to_list() == local.to_list(), split\n"
        "    print(split, len(hub))\n"
    )
    proc = _run([sys.executable, "-c", code, str(data)], endpoint)
    assert proc.stdout.split() == ["train", "30", "validation", "2", "test", str(EPISODES)]


def _lm_eval(model: Path, out: Path, endpoint: str, *extra: str) -> dict:
    _run([sys.executable, "-m", "lm_eval", "--include_path", include_path(), "--model", "hf",
          "--model_args", f"pretrained={model},dtype=float32", "--device", "cpu",
          "--tasks", "interrupt_bench", "--limit", str(EPISODES), "--batch_size", str(EPISODES),
          "--log_samples", "--output_path", str(out), *extra], endpoint)  # fmt: skip
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    samples = [json.loads(line) for line in next(out.rglob("samples_*.jsonl")).open()]
    return {
        "results": results["interrupt_bench"],
        "samples": sorted((s["doc_id"], s["filter"], s["resps"]) for s in samples),
    }


def test_lm_eval_with_no_dataset_path_reads_the_mirror(hub_mirror, tiny_model, tmp_path):
    """The task pack's default source is the Hub repo id: through the mirror it scores
    exactly what the local directory scores."""
    endpoint, data = hub_mirror
    hub = _lm_eval(tiny_model, tmp_path / "hub", endpoint)
    local = _lm_eval(tiny_model, tmp_path / "local", endpoint,
                     "--metadata", json.dumps({"dataset_path": str(data)}))  # fmt: skip
    assert hub["results"]["sample_len"] == EPISODES
    assert hub == local


def _inspect(model: Path, logs: Path, endpoint: str, source: str) -> list:
    pytest.importorskip("inspect_ai")
    from inspect_ai.log import read_eval_log

    _run([sys.executable, "-m", "inspect_ai", "eval", "interrupt_bench/interrupt_bench",
          "--model", f"hf/{model}", "-M", "do_sample=false", "-M", "device=cpu",
          "-T", f"dataset_path={source}", "--limit", str(EPISODES), "--log-dir", str(logs),
          "--display", "plain"], endpoint)  # fmt: skip
    (path,) = logs.glob("*.eval")
    log = read_eval_log(str(path))
    assert log.status == "success"
    samples = sorted((s.id, s.output.completion, json.dumps(s.scores, default=str, sort_keys=True))
                     for s in log.samples)  # fmt: skip
    return [samples, [(s.name, {k: m.value for k, m in s.metrics.items()})
                      for s in log.results.scores]]  # fmt: skip


def test_inspect_with_a_hub_dataset_path_reads_the_mirror(hub_mirror, tiny_model, tmp_path):
    endpoint, data = hub_mirror
    hub = _inspect(tiny_model, tmp_path / "hub", endpoint, HUB_DATASET_ID)
    local = _inspect(tiny_model, tmp_path / "local", endpoint, str(data))
    assert len(hub[0]) == EPISODES
    assert hub == local
