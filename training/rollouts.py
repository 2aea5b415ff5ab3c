"""Token-level rollouts of interrupted sessions for training, on the same session runs,
scorer and generation engine as the lm-eval tasks.

:func:`sample_sessions` samples every episode on :class:`local_models.engine.
SessionEngine` and keeps each session as token ids exactly as sampled: template and
question tokens are appended as the template renders them (never re-tokenising what the
model wrote), so the engine continues every turn from the session's KV cache, and a mask
marks the tokens the model sampled, the only ones that enter the loss."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

from interrupt_bench.episodes import Episode
from interrupt_bench.session import SessionRun, Transcript, TurnResult
from interrupt_bench.turn_contract import TurnContract
from local_models.chat import hf_turn_contract, turn_delta_ids
from local_models.engine import Ask, EngineStats, Generated, Sampling, SessionEngine


@dataclass
class SessionTokens:
    """One session as the model saw it."""

    ids: list[int] = field(default_factory=list)
    sampled: list[bool] = field(default_factory=list)  # True where the model sampled the id
    logprobs: list[float] = field(default_factory=list)  # sampler's log-prob (0 elsewhere)
    # the 1-based assistant turn each sampled id was written in (0 elsewhere): per-turn
    # credit (``tag_credit``) reaches the tokens of the turn that earned it
    turn: list[int] = field(default_factory=list)
    turns_done: int = 0

    def extend(self, ids: Sequence[int]) -> None:
        self.ids.extend(ids)
        self.sampled.extend([False] * len(ids))
        self.logprobs.extend([0.0] * len(ids))
        self.turn.extend([0] * len(ids))


class RolloutSession:
    """One episode sampled on the session engine: its transcript (for the scorer) and its
    token ids exactly as the model saw them, template deltas appended as rendered. Every
    turn ends as evaluation ends it (``contract``: the stop strings and EOS ids of
    :mod:`interrupt_bench.turn_contract`)."""

    def __init__(
        self,
        run: SessionRun,
        deltas: list[list[int]],
        contract: TurnContract,
        decode: Callable[[list[int]], str],
        stop_at: int | None = None,
    ):
        self.run, self.deltas, self.tokens = run, deltas, SessionTokens()
        self.contract, self.decode = contract, decode
        self.stop_at = stop_at  # the 0-based turn to stop before (None: run to the end)

    def step(self, done: Generated | None) -> Ask | None:
        tokens = self.tokens
        if done is not None:
            ids, logprobs = kept_ids(done, self.decode)
            tokens.ids.extend(ids)
            tokens.sampled.extend([True] * len(ids))
            tokens.logprobs.extend(logprobs)
            tokens.turn.extend([tokens.turns_done] * len(ids))  # the turn just asked, 1-based
            self.run.record(TurnResult(done.text, done.cut, n_tokens=done.n_tokens))
        request = self.run.next_request()
        if request is None or request.turn == self.stop_at:
            return None
        for t in range(tokens.turns_done, request.turn + 1):  # budget-0 turns included
            tokens.extend(self.deltas[t])
        tokens.turns_done = request.turn + 1
        return Ask(list(tokens.ids), request.budget, self.contract.stop)

    def branch(self) -> RolloutSession:
        """A session that goes on from where this one stopped (``stop_at``), on a copy of
        its transcript and ids; the ids so far are context there, not sampled, so only
        what the branch writes enters the loss."""
        tr = self.run.transcript
        run = SessionRun(tr.episode, self.run.session, self.run.system)
        for text, cut, n in zip(tr.outputs, tr.cut, tr.n_tokens):
            run.record(TurnResult(text, cut, n_tokens=n))
        out = RolloutSession(run, self.deltas, self.contract, self.decode)
        n = len(self.tokens.ids)
        out.tokens = SessionTokens(
            list(self.tokens.ids), [False] * n, [0.0] * n, [0] * n, self.tokens.turns_done
        )
        return out


def kept_ids(done: Generated, decode: Callable[[list[int]], str]) -> tuple[list[int], list[float]]:
    """The ids of a turn that stay in the session, with their log-probs. A turn that a
    stop string ended keeps its text up to the stop (evaluation sends the next turn that
    text); the ids kept are the longest run whose decode that text starts with, so the
    ids that wrote the stop string leave the context and the loss."""
    if done.eos or done.cut or decode(done.ids) == done.text:
        return done.ids, done.logprobs
    n = len(done.ids)
    while n > 0 and not done.text.startswith(decode(done.ids[:n])):
        n -= 1
    return done.ids[:n], done.logprobs[:n]


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
    closing_branches: int = 0,
) -> Rollouts:
    """Sample one session per episode on the session engine (all in one batch unless
    ``batch_size`` says otherwise), or on ``vllm`` (a ``training.vllm_policy.VllmPolicy``)
    with its current adapter, reproducibly from ``seed``, each after the demonstration
    sessions ``shots`` (their prefix is computed once and shared). The prompts are the
    ids the lm-eval hook sends for the same turns (:func:`local_models.chat.
    turn_delta_ids`), and every turn ends where the hook ends it (the same stop strings
    and EOS ids: :func:`local_models.chat.hf_turn_contract`).

    ``closing_branches=K`` returns K sessions per episode instead, grouped by episode:
    one greedy session up to the closing turn, then K closing turns sampled from it (the
    engine prefills the shared history once per episode). Only the closing turns are
    marked sampled."""
    contract = hf_turn_contract(tokenizer, model, chat)

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    def drivers_for(stop_at: bool) -> list[RolloutSession]:
        return [
            RolloutSession(
                SessionRun(ep, i),
                turn_delta_ids(tokenizer, ep, chat, shots=shots),
                contract,
                decode,
                stop_at=ep.n_tasks if stop_at else None,
            )
            for i, ep in enumerate(episodes)
        ]

    def run(drivers: list[RolloutSession], greedy: bool, seed: int) -> EngineStats:
        if vllm is not None:
            return vllm.run(drivers, tokenizer, greedy, temperature, seed)
        engine = SessionEngine(
            model,
            decode,
            eos_ids=list(contract.eos_ids),
            batch_size=batch_size or max(len(drivers), 1),
            sampling=Sampling(greedy=greedy, temperature=temperature, seed=seed),
        )
        return engine.run(drivers)

    if not closing_branches:
        drivers = drivers_for(stop_at=False)
        stats = run(drivers, greedy, seed)
    else:
        for ep in episodes:
            if ep.closing_budget < 1:
                raise ValueError(
                    f"episode {ep.episode_id} has no closing turn (closing budget 0), so "
                    "closing_branches has nothing to sample; train on a config with one or "
                    "turn closing_branches off"
                )
        heads = drivers_for(stop_at=True)
        history = run(heads, True, seed)
        drivers = [h.branch() for h in heads for _ in range(closing_branches)]
        stats = added(history, run(drivers, greedy, seed))
    return Rollouts([d.run.transcript for d in drivers], [d.tokens for d in drivers], stats)


def added(a: EngineStats, b: EngineStats) -> EngineStats:
    """Two runs' figures as one (``max_rows``: the larger)."""
    out = EngineStats()
    for f in fields(EngineStats):
        x, y = getattr(a, f.name), getattr(b, f.name)
        setattr(out, f.name, max(x, y) if f.name == "max_rows" else x + y)
    return out
