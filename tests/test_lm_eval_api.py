"""The API path: ``--model local-chat-completions`` against ``transformers serve`` running
the tiny model on 127.0.0.1; and a server that dies mid-run fails loudly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lm_eval_tasks import include_path

from .conftest import free_port, samples_file, wait_until_serving
from .test_lm_eval_cli import run_lm_eval

SERVE = Path(sys.executable).with_name("transformers")


@pytest.fixture
def server(tiny_model, tmp_path):
    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115  (the server writes to it until teardown)
    proc = subprocess.Popen(
        [str(SERVE), "serve", str(tiny_model), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        start_new_session=True,
    )
    if not wait_until_serving(f"http://127.0.0.1:{port}/health", proc, 120):
        raise RuntimeError((tmp_path / "serve.log").read_text()[-2000:])
    yield proc, port, tmp_path / "serve.log"
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    log.close()


def _api_args(tiny_model, port, dataset, out, limit):
    return (
        "--model",
        "local-chat-completions",
        "--model_args",
        f"model={tiny_model},base_url=http://127.0.0.1:{port}/v1/chat/completions,num_concurrent=1,"
        f"max_retries=1,tokenizer_backend=huggingface,tokenizer={tiny_model},tokenized_requests=False",
        "--tasks",
        "interrupt_bench",
        "--apply_chat_template",
        "--metadata",
        json.dumps({"dataset_path": str(dataset)}),
        "--limit",
        str(limit),
        "--log_samples",
        "--output_path",
        str(out),
    )


def test_local_chat_completions_end_to_end(server, tiny_model, small_dataset, tmp_path):
    _, port, log = server
    out = tmp_path / "out"
    result = run_lm_eval(*_api_args(tiny_model, port, small_dataset, out, 3))
    assert result.returncode == 0, result.stderr[-3000:]
    logged = [json.loads(x) for x in samples_file(out, "interrupt_bench").read_text().splitlines()]
    samples = [s for s in logged if s["filter"] == "strict"]  # logged once per filter
    assert len(samples) == 3 and len(logged) == 6
    sent = sum(b > 0 for s in samples for b in s["doc"]["budgets"] + [s["doc"]["closing_budget"]])
    assert log.read_text().count("POST /v1/chat/completions") == sent
    turn = json.loads(samples[0]["resps"][0][0])["sessions"][0]["turns"][0]
    assert json.loads(turn["prompt"])[0]["role"] == "system"  # messages, not a rendered string


def test_server_dying_mid_run_is_a_clear_failure(server, tiny_model, small_dataset, tmp_path):
    proc, port, log = server
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "lm_eval",
        "--include_path",
        include_path(),
        *_api_args(tiny_model, port, small_dataset, out, 20),
    ]
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while log.read_text().count("POST /v1/chat/completions") < 5:
        assert run.poll() is None and time.time() < deadline, "lm_eval ended before the kill"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode != 0
    assert "SessionReplayError" in stderr and "failed at turn" in stderr
    assert not list(out.rglob("results_*.json"))
