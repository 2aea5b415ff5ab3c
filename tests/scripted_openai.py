"""A scripted OpenAI-compatible chat server for the Inspect front end's tests: every
request is logged (one JSON line: the messages, ``max_tokens``, ``stop`` and the reply),
and the reply follows a fixed script, cut at ``max_tokens`` whitespace tokens
(``finish_reason: length``) or at a stop string (``stop``), as a real server cuts.

The script: to question K, ``<answer task=K>`` and twelve words, closed; to the closing
message, a closed answer for every task asked, then a next-question tag (which the stop
string must remove). ``--die-after N`` exits without answering the N-th request.

    python -m tests.scripted_openai --port PORT --log FILE [--die-after N]"""

from __future__ import annotations

import argparse
import json
import os
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


def script(messages: list[dict]) -> str:
    """The full reply to a conversation, before any cut."""
    last = messages[-1]["content"]
    asked = re.findall(r"<question task=(\d+)>", last)
    if asked:
        return f"<answer task={asked[0]}>{' '.join(WORDS)}</answer>"
    tasks = sorted(
        {int(k) for m in messages for k in re.findall(r"<question task=(\d+)>", m["content"])}
    )
    return " ".join(f"<answer task={k}>x</answer>" for k in tasks) + " <question task=99>more"


def reply(body: dict) -> tuple[str, str]:
    """The text sent back and its finish reason."""
    text = script(body["messages"])
    for stop in body.get("stop") or []:
        if stop in text:
            return text.split(stop)[0], "stop"
    pieces = re.findall(r"\S+\s*", text)
    budget = body.get("max_tokens")
    if budget is not None and len(pieces) > budget:
        return "".join(pieces[:budget]), "length"
    return text, "stop"


class Handler(BaseHTTPRequestHandler):
    log_path: str = ""
    die_after: int = 0
    served = 0

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.served += 1
        if Handler.die_after and Handler.served >= Handler.die_after:
            os._exit(1)
        text, finish = reply(body)
        with open(Handler.log_path, "a") as f:
            f.write(
                json.dumps(
                    {
                        "messages": body["messages"],
                        "max_tokens": body.get("max_tokens"),
                        "stop": body.get("stop"),
                        "reply": text,
                        "finish": finish,
                    }
                )
                + "\n"
            )
        n = len(re.findall(r"\S+\s*", text))
        out = {
            "id": f"chatcmpl-{Handler.served}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1},
        }  # fmt: skip
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--die-after", type=int, default=0)
    args = parser.parse_args()
    Handler.log_path, Handler.die_after = args.log, args.die_after
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
