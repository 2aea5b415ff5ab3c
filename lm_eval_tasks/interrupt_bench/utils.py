"""interrupt-bench for lm-evaluation-harness: one document per episode, whose request
(``interrupt_session``, installed on every lm-eval LM by ``lm_eval_tasks/dispatch.py``) plays
the session on the session engine (``hf``), the ``vllm.LLM`` (vLLM) or ``generate_until``
(other backends). Session loop, prompts and scorer come from the ``interrupt_bench`` core."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import datasets
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from interrupt_bench import demonstrations
from interrupt_bench.config import families_of
from interrupt_bench.controls import PAIRED, check_budget_cap
from interrupt_bench.costs import is_cost, paired_metrics
from interrupt_bench.dataset import HUB_DATASET_ID, check_rows, load_rows
from interrupt_bench.errors import ConfigError
from interrupt_bench.records import episode_items
from interrupt_bench.scoring import FILTERS, lm_eval_metrics, ratio_of_sums
from lm_eval_tasks.dispatch import REQUEST_TYPE, install, request_args
from lm_eval_tasks.settings import CHOICES, RunSettings, check_cache_gb, check_choice

install()


def load_episodes(
    dataset_path: str | None = None,
    config_name: str = "default",
    split: str = "test",
    **_metadata: object,
) -> datasets.DatasetDict:
    """lm-eval's ``custom_dataset`` hook: the evaluated split of one config, from
    ``--metadata '{"dataset_path": DIR}'`` (a builder directory) or the Hub. Every row is
    checked here, so a corrupt one is named before any model call. Other metadata
    (the condition, the model's arguments) is not about the data and is ignored."""
    source = str(dataset_path or HUB_DATASET_ID)
    rows = load_rows(source, config_name, split)
    check_rows(rows, source, config_name, split)
    return datasets.DatasetDict({split: rows})


class InterruptBenchTask(ConfigurableTask):
    """A YAML-configured task whose Instances are whole sessions, not single prompts."""

    def __init__(self, config: dict | None = None, **kwargs):
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        check_metadata(config.get("metadata") or {})  # before the data or any model call
        config["metric_list"] = condition_metric_list(config)
        # lm-eval calls ``custom_dataset(**metadata, **dataset_kwargs)``: hand it the
        # YAML's ``dataset_name`` and split, so each fact stays in its usual YAML key
        config["dataset_kwargs"] = {
            **(config.get("dataset_kwargs") or {}),
            "config_name": config.get("dataset_name") or "default",
            "split": config.get("test_split") or config.get("validation_split"),
        }
        super().__init__(config=config, **kwargs)
        self.OUTPUT_TYPE = REQUEST_TYPE  # lm-eval pads ranks per this type
        self._shots: tuple[int, list] | None = None  # (k, demonstrations), picked once
        self._multiturn: bool | None = None  # lm-eval's --fewshot_as_multiturn, when given

    def build_all_requests(self, *, tokenizer_name: str = "", **kwargs) -> None:
        """lm-eval's ``--cache_requests`` names its request file after the task, the shots,
        the rank, the chat flags and the tokenizer only, so after a rebuild (or with new
        metadata or ``--gen_kwargs``) it would replay the old episodes while logging the
        new docs. The file name also carries :meth:`request_identity`, through the one
        part of it a task can extend (``tokenizer_name`` is used for nothing else)."""
        if kwargs.get("cache_requests"):
            tokenizer_name = f"{tokenizer_name}-requests{self.request_identity()}"
        super().build_all_requests(tokenizer_name=tokenizer_name, **kwargs)

    def request_identity(self) -> str:
        """A hash of everything the requests are made of besides what lm-eval's key
        already names: the evaluated rows, the demonstration sessions, the metadata and
        the generation settings (16 hex digits)."""
        docs = self.eval_docs
        rows = docs.to_list() if isinstance(docs, datasets.Dataset) else list(docs)
        shots = demonstrations.as_sessions(self.demonstrations(int(self.config.num_fewshot or 0)))
        content = {
            "rows": rows,
            "shots": shots,
            "metadata": self.config.metadata,
            "generation_kwargs": self.config.generation_kwargs,
        }
        text = json.dumps(content, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _source(self) -> str:
        return (self.config.metadata or {}).get("dataset_path") or HUB_DATASET_ID

    def demonstrations(self, k: int) -> list:
        """The ``k`` oracle demonstration sessions from the config's train split, chosen
        by ``metadata.fewshot_rule`` (default: the core's, ``demonstrations.DEFAULT_RULE``)
        (cached)."""
        check_num_fewshot(k)
        rule = (self.config.metadata or {}).get("fewshot_rule", demonstrations.DEFAULT_RULE)
        if self._shots is None or self._shots[0] != (k, rule):
            config, split = self.config.dataset_name or "default", self.config.fewshot_split
            shots = demonstrations.from_dataset(
                self._source(), config, k, split or "train", rule=rule
            )
            self._shots = ((k, rule), shots)
        return self._shots[1]

    def fewshot_context(
        self, doc, num_fewshot, system_instruction=None, fewshot_as_multiturn=False, **kwargs
    ) -> str:
        """Picks the demonstrations (failing before any model call when the train split
        cannot supply ``num_fewshot``); the context carries ``--system_instruction``."""
        self.demonstrations(num_fewshot)
        self._multiturn = bool(fewshot_as_multiturn)
        return system_instruction or ""

    def placement(self, chat: bool) -> str:
        """Where demonstrations go: ``metadata.fewshot_placement``, or with ``auto``,
        lm-eval's convention (chat turns with ``--fewshot_as_multiturn``, which
        ``--apply_chat_template`` turns on; inside the system prompt otherwise)."""
        chosen = check_choice(
            "fewshot_placement", (self.config.metadata or {}).get("fewshot_placement", "auto")
        )
        if chosen == "auto":
            multiturn = chat if self._multiturn is None else self._multiturn
            return "turns" if multiturn or not chat else "system"
        return chosen

    def process_results(self, doc: dict, results: list[str]) -> dict:
        """``--predict_only`` replaces the task's metrics with lm-eval's ``bypass`` one
        (and ``process_results`` with lm-eval's own, which knows no ``interrupt_session``
        requests): the sessions are generated and logged with ``--log_samples``, and each
        episode reports ``bypass`` only, nothing scored."""
        if "bypass" in self._metric_fn_list:
            return {"bypass": None}
        return super().process_results(doc, results)

    def construct_requests(self, doc, ctx, **kwargs) -> Instance:
        chat = bool(kwargs.pop("apply_chat_template", False))
        kwargs.pop("chat_template", None)
        meta = self.config.metadata or {}
        gen = {
            k: v
            for k, v in (self.config.generation_kwargs or {}).items()
            if k != "max_gen_toks"  # each turn's budget replaces it
        }
        shots = self.demonstrations(int(self.config.num_fewshot or 0))
        settings = RunSettings(
            chat=chat,
            fewshot=demonstrations.as_sessions(shots),
            fewshot_placement=self.placement(chat),
            system_instruction=ctx or None,
            generation_kwargs=gen,
            **{k: meta[k] for k in RUN_METADATA if meta.get(k) is not None},
        )
        return Instance(
            request_type=REQUEST_TYPE,
            doc=doc,
            arguments=request_args(doc, settings),
            idx=0,
            **kwargs,
        )


# the metadata keys that are settings of the sessions (:class:`RunSettings`)
RUN_METADATA = ("condition", "budget_cap", "turn_batching", "max_cache_gb")


def check_metadata(meta: dict) -> None:
    """Every setting of ``--metadata`` (or the YAML's ``metadata``) that the sessions
    read, checked when the task is built, before its data is loaded or any model call:
    ConfigError in one line naming the value and what to write instead."""
    for key, (allowed, _) in CHOICES.items():
        check_choice(key, meta.get(key, allowed[0]))
    demonstrations.check_rule(meta.get("fewshot_rule", demonstrations.DEFAULT_RULE))
    if "budget_cap" in meta:
        check_budget_cap(meta["budget_cap"])
    if meta.get("max_cache_gb") is not None:
        check_cache_gb(meta["max_cache_gb"])


def check_num_fewshot(k: object) -> None:
    """``--num_fewshot``: a whole number of demonstration sessions, 0 or more."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ConfigError(
            f"--num_fewshot is {k}; give 0 or more demonstration sessions (0: none), or "
            "leave it out for the task's default"
        )


def condition_metric_list(config: dict) -> list[dict]:
    """The task's ``metric_list`` for the condition it plays: the YAML's, unless
    ``metadata.condition`` asks for the other kind, the paired controls (``paired``: the
    three conditions' metrics and the paired costs) or one condition (``interrupted``,
    ``nocut``, ``single``: the benchmark's metrics), whose list is then the one the
    generated YAMLs give that kind (``_generate_configs.py``)."""
    listed = config.get("metric_list")
    condition = (config.get("metadata") or {}).get("condition", RunSettings.condition)
    paired_list = any(m.get("metric") == "accuracy_nocut" for m in listed or [])
    if paired_list == (condition == PAIRED):
        return listed
    if condition == PAIRED:
        metrics = paired_metrics()
    else:
        metrics = lm_eval_metrics(families_of(config.get("dataset_name") or "default"))
    return [
        {
            "metric": name,
            "aggregation": "mean" if how == "mean" else ratio,
            "higher_is_better": not is_cost(name),
        }
        for name, how in metrics.items()
    ]


def doc_to_text(doc: dict) -> str:
    return "\n".join(
        f"<question task={t['task_id']}>{t['question']}</question>" for t in doc["tasks"]
    )


def doc_to_target(doc: dict) -> str:
    return " | ".join(f"{t['task_id']}: {t['answer']}" for t in doc["tasks"])


FLEXIBLE_MARK = FILTERS[1]


def flexible(resps: Iterable[str], docs: list[dict]) -> list[str]:
    """The ``flexible`` filter (after ``take_first``): marks each replayed session for
    flexible scoring (``interrupt_bench.scoring.score_episode``); the transcripts are
    unchanged, so ``--log_samples`` shows the same text under both filters."""
    marked = []
    for resp in resps:
        record = json.loads(resp)
        record["filter"] = FLEXIBLE_MARK
        marked.append(json.dumps(record, ensure_ascii=False))
    return marked


def process_results(doc: dict, results: list[str]) -> dict:
    """Score the replayed session(s) of one episode with the core scorer, strictly or
    (after the ``flexible`` filter) flexibly (:func:`interrupt_bench.records.
    episode_items`); the paired controls give the paired costs."""
    record = json.loads(results[0])
    return episode_items(record["sessions"], flexible=record.get("filter") == FLEXIBLE_MARK)


def ratio(items: Iterable[tuple[int, int]]) -> float:
    """Aggregate (numerator, denominator) pairs over all episodes: sum / sum."""
    return ratio_of_sums(items)
