"""The reference policies as lm-eval language models, so the whole harness (task pack,
hook, batching, scoring, sample logging, data parallelism) can be checked end to end
against numbers the core predicts.

``PolicyLM`` reads the session from the prompt it is sent (plain mode): the questions
asked so far, its own earlier closed answers and whether the closing turn has come. It
looks answers up by question text, writes the policy's answer tags (``echo``: the
current question's text, or the closing message) and stops at ``max_gen_toks``
whitespace-separated tokens, its tokenizer."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval's own models join the registry first)
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from interrupt_bench import prompts
from interrupt_bench.episodes import Episode
from interrupt_bench.policies import POLICIES, answer_tag, cut_to_words
from interrupt_bench.tags import parse_turn

_QUESTION = re.compile(r"<question task=(\d+)>(.*?)</question>", re.DOTALL)


class WhitespaceTokenizer:
    """Counts whitespace-separated tokens, the unit the reference policies are cut in."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[str]:
        return text.split()


@register_model("interrupt-bench-policy")
class PolicyLM(LM):
    """On ``interrupt-bench-lm-eval`` (lm-eval's CLI with this model registered):
    ``--model interrupt-bench-policy --model_args
    policy=oracle,dataset_path=DIR,configs=default+easy``."""

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string))

    @classmethod
    def create_from_arg_obj(cls, args: dict, additional_config: dict | None = None):
        from interrupt_bench.dataset import load_episodes

        if "dataset_path" not in args:
            raise ValueError(
                "interrupt-bench-policy needs --model_args dataset_path=DIR (the build whose "
                "answers it looks up), e.g. policy=oracle,dataset_path=DIR,configs=default"
            )
        episodes = [
            episode
            for config in str(args.get("configs", "default")).split("+")
            for split in ("validation", "test")
            for episode in load_episodes(str(args["dataset_path"]), config, split)
        ]
        return cls(episodes, str(args.get("policy", "oracle")))

    def __init__(
        self,
        episodes: Iterable[Episode],
        policy: str = "oracle",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")
        self.policy = policy
        self.answers = {t.question: t.answer for ep in episodes for t in ep.tasks}
        self.tokenizer = WhitespaceTokenizer()
        self._rank, self._world_size = rank, world_size
        self.calls: list[int] = []  # batch size of each generate_until call

    # -- the policy ----------------------------------------------------------------------
    def respond(self, prompt: str) -> str:
        prompt = self._real_session(prompt)
        questions = [(int(k), q) for k, q in _QUESTION.findall(prompt)]
        if not questions:
            return ""
        last = prompt.rfind("</question>")
        closing = prompts.closing_message(len(questions)) in prompt[last:]
        if self.policy == "echo":
            return prompts.closing_message(len(questions)) if closing else questions[-1][1]
        current = answer_tag(*self._answer(questions[-1]))  # closing turn: the last task's
        if self.policy == "no_resume":
            return "" if closing else current
        if self.policy == "close_last" or (self.policy == "close_open" and not closing):
            return current
        # the oracle, and close_open's closing turn: every task without a closed answer
        answered = {k for k, _ in parse_turn(prompt).answers()}
        return "\n".join(answer_tag(*self._answer(q)) for q in questions if q[0] not in answered)

    @staticmethod
    def _real_session(prompt: str) -> str:
        """The prompt from the end of the last demonstration session on (few-shot
        demonstrations are whole sessions, each ending with the closing message, before
        the real session's first question)."""
        marker = prompts.closing_message(1)[:30]
        last_question = prompt.rfind("</question>")
        closing = prompt.rfind(marker, 0, last_question)
        if closing < 0:
            return prompt
        return prompt[prompt.find(prompts.question_message(1, "")[:16], closing) :]

    def _answer(self, question: tuple[int, str]) -> tuple[int, str]:
        task_id, text = question
        return task_id, self.answers.get(text, "?")

    # -- lm-eval API ---------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        self.calls.append(len(requests))
        out = []
        for req in requests:
            prompt, gen_kwargs = req.args
            text = cut_to_words(self.respond(str(prompt)), int(gen_kwargs["max_gen_toks"])).text
            for stop in gen_kwargs.get("until", []):
                text = text.split(stop)[0]
            self.cache_hook.add_partial("generate_until", req.args, text)  # as real backends do
            out.append(text)
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[Any]:
        raise NotImplementedError("PolicyLM only generates")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[Any]:
        raise NotImplementedError("PolicyLM only generates")

    # -- data parallelism over torch.distributed (gloo on CPU) ---------------------------
    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def device(self) -> str:
        return "cpu"

    def all_gather(self, tensor):
        import torch
        import torch.distributed as dist

        parts = [torch.zeros_like(tensor) for _ in range(self._world_size)]
        dist.all_gather(parts, tensor)
        return torch.stack(parts)

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        import torch.distributed as dist

        parts = [None] * self._world_size if self._rank == dst else None
        dist.gather_object(obj, parts, dst=dst)
        return parts

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()
