"""interrupt-bench for lm-evaluation-harness: each episode is one document whose request
(type ``interrupt_session``) replays the whole session turn by turn through the model's
``generate_until``. Importing this module installs that hook on every lm-eval LM; the
session loop, prompts and scorer all come from the ``interrupt_bench`` core package."""

from __future__ import annotations

import json
from collections.abc import Iterable

import datasets
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from interrupt_bench.controls import GENEROUS_CAP
from interrupt_bench.dataset import HUB_DATASET_ID, load_rows
from interrupt_bench.episodes import Episode
from interrupt_bench.lm_eval_hook import REQUEST_TYPE, install, request_args
from interrupt_bench.scoring import merge_scores, ratio_of_sums, score_episode

install()

FAMILIES = ("math", "translation", "ordering")


class InterruptBenchTask(ConfigurableTask):
    """A YAML-configured task whose Instances are whole sessions, not single prompts."""

    def __init__(self, config: dict | None = None, **kwargs):
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        super().__init__(config=config, **kwargs)
        self.OUTPUT_TYPE = REQUEST_TYPE  # lm-eval pads ranks per this type

    def download(self, dataset_kwargs=None, **kwargs) -> None:
        """Rows from ``--metadata '{"dataset_path": DIR}'`` (a builder directory) or the Hub."""
        meta = self.config.metadata or {}
        path = meta.get("dataset_path") or self.config.dataset_path or HUB_DATASET_ID
        split = self.config.test_split
        rows = load_rows(path, self.config.dataset_name or "default", split)
        for row in rows:  # fail before any model call, naming the bad row
            Episode.from_row(row)
        self.dataset = datasets.DatasetDict({split: rows})

    def fewshot_context(self, doc, num_fewshot, system_instruction=None, **kwargs) -> str:
        """No few-shot; the context carries ``--system_instruction`` to the hook."""
        return system_instruction or ""

    def construct_requests(self, doc, ctx, **kwargs) -> Instance:
        chat = bool(kwargs.pop("apply_chat_template", False))
        kwargs.pop("chat_template", None)
        meta = self.config.metadata or {}
        gen = {
            k: v
            for k, v in (self.config.generation_kwargs or {}).items()
            if k != "max_gen_toks"  # each turn's budget replaces it
        }
        settings = {
            "condition": meta.get("condition", "interrupted"),
            "budget_cap": int(meta.get("budget_cap", GENEROUS_CAP)),
            "chat": chat,
            "system_instruction": ctx or None,
            "generation_kwargs": gen,
            "turn_batching": meta.get("turn_batching", "auto"),
        }
        return Instance(
            request_type=REQUEST_TYPE,
            doc=doc,
            arguments=request_args(doc, settings),
            idx=0,
            **kwargs,
        )


def doc_to_text(doc: dict) -> str:
    return "\n".join(
        f"<question task={t['task_id']}>{t['question']}</question>" for t in doc["tasks"]
    )


def doc_to_target(doc: dict) -> str:
    return " | ".join(f"{t['task_id']}: {t['answer']}" for t in doc["tasks"])


def process_results(doc: dict, results: list[str]) -> dict:
    """Score the replayed session(s) of one episode with the core scorer."""
    sessions = json.loads(results[0])["sessions"]
    scores = [score_episode(Episode.from_row(s["row"]), s["outputs"], s["cut"]) for s in sessions]
    score = merge_scores(scores) if len(scores) > 1 else scores[0]
    out = {
        "accuracy": score.accuracy,
        "reattempts": float(score.reattempts),
        "reattempt_rate": score.reattempt_rate,
        "answer_rate": score.answer_rate,
        "format_rate": score.format_rate,
        "resumption_rate": (score.resumption_num, score.resumption_den),
    }
    for family in FAMILIES:
        out[f"accuracy_{family}"] = score.family_counts.get(family, (0, 0))
    return out


def ratio(items: Iterable[tuple[int, int]]) -> float:
    """Aggregate (numerator, denominator) pairs over all episodes: sum / sum."""
    return ratio_of_sums(items)
