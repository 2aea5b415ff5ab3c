"""Token-level rollouts of interrupted sessions for training, on the same session runs,
scorer and generation engine as the lm-eval tasks.

:func:`sample_sessions` samples every episode on :class:`local_models.engine.
SessionEngine` and keeps each session as token ids exactly as sampled: template and
question tokens are appended as the template renders them (never re-tokenising what the
model wrote), so the engine continues every turn from the session's KV cache, and a mask
marks the tokens the model sampled, the only ones that enter the loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from interrupt_bench.episodes import Episode
from interrupt_bench.session import SessionRun, Transcript, TurnResult
from local_models.chat import turn_delta_ids
from local_models.engine import Ask, EngineStats, Generated, Sampling, SessionEngine


@dataclass
class SessionTokens:
    """One session as the model saw it."""

    ids: list[int] = field(default_factory=list)
    sampled: list[bool] = field(default_factory=list)  # True where the model sampled the id
    logprobs: list[float] = field(default_factory=list)  # sampler's log-prob (0 elsewhere)
    turns_done: int = 0

    def extend(self, ids: Sequence[int]) -> None:
        self.ids.extend(ids)
        self.sampled.extend([False] * len(ids))
        self.logprobs.extend([0.0] * len(ids))


class RolloutSession:
    """One episode sampled on the session engine: its transcript (for the scorer) and its
    token ids exactly as the model saw them, template deltas appended as rendered."""

    def __init__(self, run: SessionRun, deltas: list[list[int]]):
        self.run, self.deltas, self.tokens = run, deltas, SessionTokens()

    def step(self, done: Generated | None) -> Ask | None:
        tokens = self.tokens
        if done is not None:
            tokens.ids.extend(done.ids)
            tokens.sampled.extend([True] * len(done.ids))
            tokens.logprobs.extend(done.logprobs)
            self.run.record(TurnResult(done.text, done.cut, n_tokens=len(done.ids)))
        request = self.run.next_request()
        if request is None:
            return None
        for t in range(tokens.turns_done, request.turn + 1):  # budget-0 turns included
            tokens.extend(self.deltas[t])
        tokens.turns_done = request.turn + 1
        return Ask(list(tokens.ids), request.budget)


@dataclass
class Rollouts:
    transcripts: list[Transcript]
    sessions: list[SessionTokens]
    stats: EngineStats

    @property
    def generated_tokens(self) -> int:
        return self.stats.generated_tokens


def sample_sessions(
    model,
    tokenizer,
    episodes: Sequence[Episode],
    *,
    chat: bool = True,
    temperature: float = 1.0,
    greedy: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
    shots: Sequence[list[dict[str, str]]] = (),
    vllm=None,
) -> Rollouts:
    """Sample one session per episode on the session engine (all in one batch unless
    ``batch_size`` says otherwise), or on ``vllm`` (a ``training.vllm_policy.VllmPolicy``)
    with its current adapter, reproducibly from ``seed``, each after the demonstration
    sessions ``shots`` (their prefix is computed once and shared). The prompts are the
    ids the lm-eval hook sends for the same turns (:func:`local_models.chat.
    turn_delta_ids`)."""
    runs = [SessionRun(ep, i) for i, ep in enumerate(episodes)]
    drivers = [
        RolloutSession(run, turn_delta_ids(tokenizer, ep, chat, shots=shots))
        for run, ep in zip(runs, episodes)
    ]
    if vllm is not None:
        stats = vllm.run(drivers, tokenizer, greedy, temperature, seed)
        return Rollouts([r.transcript for r in runs], [d.tokens for d in drivers], stats)
    engine = SessionEngine(
        model,
        lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        eos_ids=[] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id],
        batch_size=batch_size or max(len(episodes), 1),
        sampling=Sampling(greedy=greedy, temperature=temperature, seed=seed),
    )
    stats = engine.run(drivers)
    return Rollouts([r.transcript for r in runs], [d.tokens for d in drivers], stats)
