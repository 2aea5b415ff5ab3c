"""One benchmark, two harnesses: the same episodes through lm-eval and through Inspect AI,
side by side in one run, compared turn by turn and score by score.

  (L) lm-eval, ``--model hf``: the session engine (turn batching, exact cuts);
  (I) Inspect, ``--model hf/DIR``: Inspect's own transformers provider, one ``generate``
      per turn, batched across samples that ask with the same settings;
  (S) Inspect, ``--model openai-api/serve/DIR`` against ``transformers serve`` on
      127.0.0.1: the OpenAI-compatible route a user of an API server takes (the server
      renders the chat template and counts ``max_tokens`` in the model's own tokens).

Greedy, float32, the task's default shot (one demonstration), the model's chat template.
Each path is the real CLI in its own process; the wall time is the whole command (model
load included), and the server's start-up is timed apart from (S). Prints per path: wall
time, episodes whose every turn has the same text as (L), and the mean of each metric.

    .venv/bin/python benchmarks/bench_inspect.py [--episodes 32] [--paths LIS]
        [--config default] [--data DIR] [--json docs/results/bench_inspect.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import local_models  # noqa: F401  (first: hides torch extensions that cannot load here)
from lm_eval_tasks import include_path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "400"}
METRICS = ("accuracy", "answer_rate", "resumption_rate", "format_rate", "reattempts")
SMOLLM2 = "smollm2-135m-instruct"


def task_name(config: str) -> str:
    return "interrupt_bench" if config == "default" else f"interrupt_bench_{config}"


def timed(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Run ``cmd`` to completion (output to ``log``); its wall seconds, or exit naming it."""
    began = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                              env={**ENV, **(env or {})})  # fmt: skip
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        sys.exit(f"bench_inspect: {' '.join(cmd[:4])} ... failed (exit {proc.returncode}); "
                 f"see {log}:\n{log.read_text()[-2000:]}")  # fmt: skip
    return seconds


def lm_eval_sessions(out: Path) -> dict[str, dict]:
    """Episode id -> the session lm-eval logged (strict filter)."""
    (path,) = out.rglob("samples_*.jsonl")
    found = {}
    for line in path.read_text().splitlines():
        sample = json.loads(line)
        if sample["filter"] == "strict":
            (session,) = json.loads(sample["resps"][0][0])["sessions"]
            found[session["episode_id"]] = session
    return found


def lm_eval_reported(out: Path, task: str) -> dict[str, float]:
    """The strict filter's metrics as lm-eval reported them."""
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"][task]
    return {m: results[f"{m},strict"] for m in METRICS if f"{m},strict" in results}


def inspect_run(logs: Path) -> tuple[dict[str, dict], dict[str, float]]:
    """Episode id -> the session Inspect's solver kept; and the metrics Inspect reported."""
    from inspect_ai.log import read_eval_log

    from inspect_tasks.solver import STORE_KEY

    (path,) = logs.glob("*.eval")
    log = read_eval_log(str(path), resolve_attachments=True)
    found = {}
    for sample in log.samples:
        (session,) = sample.store[STORE_KEY]
        found[str(sample.id)] = session
    reported = {}
    for score in log.results.scores:
        if score.name in METRICS:
            reported[score.name] = next(m.value for k, m in score.metrics.items() if k != "stderr")
    return found, reported


def compare(ours: dict[str, dict], base: dict[str, dict]) -> dict:
    """Turns and episodes with the same text as ``base``."""
    same_turns = turns = same_episodes = 0
    for key, session in base.items():
        other = ours[key]["outputs"]
        pairs = list(zip(session["outputs"], other))
        turns += len(pairs)
        same_turns += sum(a == b for a, b in pairs)
        same_episodes += all(a == b for a, b in pairs)
    return {"same_turns": same_turns, "turns": turns, "same_episodes": same_episodes}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, log: Path) -> tuple[subprocess.Popen, int, float]:
    port = free_port()
    began = time.perf_counter()
    proc = subprocess.Popen(
        [str(BIN / "transformers"), "serve", "--host", "127.0.0.1", "--port", str(port),
         "--dtype", "float32", str(model)],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=ENV, start_new_session=True,
    )  # fmt: skip
    while time.perf_counter() - began < 300:
        if proc.poll() is not None:
            sys.exit(f"bench_inspect: transformers serve exited ({proc.returncode}); see {log}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc, port, time.perf_counter() - began
        except OSError:
            time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    sys.exit(f"bench_inspect: transformers serve did not answer in 300 s; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--config", default="default")
    parser.add_argument("--paths", default="LIS", help="any of L, I, S")
    parser.add_argument("--data", type=Path, help="a built dataset (default: build one)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    from local_models import hardware
    from local_models import registry as models

    if not models.is_cached(SMOLLM2):
        sys.exit(f"bench_inspect: {SMOLLM2} is not cached: interrupt-bench-models fetch {SMOLLM2}")
    model = models.model_path(SMOLLM2)
    work = Path(tempfile.mkdtemp(prefix="bench_inspect-"))
    data = args.data
    if data is None:
        data = work / "data"
        timed([sys.executable, "-m", "dataset_builder", "build", "--out", str(data), "--quiet"],
              work / "build.log")  # fmt: skip
    task, n = task_name(args.config), str(args.episodes)
    print(f"SmolLM2-135M-Instruct, float32, greedy, {n} {args.config} test episodes, 1 shot")
    print(f"machine: {hardware.describe()}")
    inspect_common = [
        sys.executable, "-m", "inspect_ai", "eval", f"interrupt_bench/{task}",
        "-T", f"dataset_path={data}", "-T", f"config={args.config}", "--limit", n,
        "--display", "plain", "--temperature", "0",
    ]  # fmt: skip
    figures: dict[str, dict] = {}
    sessions: dict[str, dict[str, dict]] = {}
    if "L" in args.paths:
        out = work / "lm_eval"
        seconds = timed([
            str(BIN / "lm_eval"), "--model", "hf",
            "--model_args", f"pretrained={model},dtype=float32",
            "--device", "cpu", "--include_path", include_path(), "--tasks", task,
            "--apply_chat_template", "--limit", n, "--batch_size", n,
            "--metadata", json.dumps({"dataset_path": str(data)}),
            "--log_samples", "--output_path", str(out),
        ], work / "lm_eval.log")  # fmt: skip
        sessions["L"] = lm_eval_sessions(out)
        figures["L"] = {"seconds": seconds, "means": lm_eval_reported(out, task)}
    if "I" in args.paths:
        logs = work / "inspect_hf"
        seconds = timed([*inspect_common, "--model", f"hf/{model}", "-M", "do_sample=false",
                         "-M", "dtype=float32", "-M", "device=cpu", "--log-dir", str(logs)],
                        work / "inspect_hf.log")  # fmt: skip
        sessions["I"], reported = inspect_run(logs)
        figures["I"] = {"seconds": seconds, "means": reported}
    if "S" in args.paths:
        server, port, start = start_server(model, work / "serve.log")
        try:
            logs = work / "inspect_serve"
            seconds = timed([*inspect_common, "--model", f"openai-api/serve/{model}",
                             "--log-dir", str(logs)], work / "inspect_serve.log",
                            env={"SERVE_BASE_URL": f"http://127.0.0.1:{port}/v1",
                                 "SERVE_API_KEY": "local"})  # fmt: skip
        finally:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        sessions["S"], reported = inspect_run(logs)
        figures["S"] = {"seconds": seconds, "start": start, "means": reported}
    names = {"L": "(L) lm-eval hf, session engine", "I": "(I) Inspect hf provider",
             "S": "(S) Inspect openai-api -> transformers serve"}  # fmt: skip
    base = sessions.get("L") or next(iter(sessions.values()))
    print(f"{'path':46s} {'wall s':>7s} {'x (L)':>6s} {'same turns':>11s} {'same eps':>8s} "
          + " ".join(f"{m[:10]:>10s}" for m in METRICS))  # fmt: skip
    for key, found in sessions.items():
        row = figures[key]
        row |= compare(found, base)
        slower = row["seconds"] / figures["L"]["seconds"] if "L" in figures else float("nan")
        start = f" (+{row['start']:.0f} s server start)" if "start" in row else ""
        turns = f"{row['same_turns']}/{row['turns']}"
        agree = f"{turns:>11s} {row['same_episodes']:>4d}/{len(base):<3d}"
        values = " ".join(f"{row['means'].get(m, float('nan')):10.3f}" for m in METRICS)
        print(f"{names[key]:46s} {row['seconds']:7.1f} {slower:6.2f} {agree} {values}{start}")
    if args.json:
        record = {"machine": hardware.describe(), "episodes": args.episodes,
                  "config": args.config, "paths": figures}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1))
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
