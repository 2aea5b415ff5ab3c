"""The session replay loop shared by the lm-eval hook, the training rollouts and the
reference policies.

:class:`SessionRun` is one episode in progress. :func:`replay` drives many
turn-synchronously: at turn t every episode still running sends its request, and a
*responder* answers the whole batch at once (one ``generate_until`` call or a scripted
policy); the session engine (``local_models.engine``) drives them continuously
instead. Budget-0 turns never reach a model: its message is empty and the next question
follows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from interrupt_bench import prompts
from interrupt_bench.episodes import Episode
from interrupt_bench.scoring import EpisodeScore, score_episode


@dataclass(frozen=True)
class TurnRequest:
    """What a responder must answer: continue ``messages`` with at most ``budget`` tokens."""

    episode: Episode
    turn: int  # 0-based; turn == n_tasks is the closing turn
    messages: list[dict[str, str]]  # system?, user, assistant, …, user (this turn's)
    budget: int
    previous_outputs: tuple[str, ...]  # this episode's assistant texts so far, as cut
    session: int = 0  # position of the episode in the list given to ``replay``


@dataclass(frozen=True)
class TurnResult:
    text: str
    cut: bool | None  # stopped by the budget rather than by the model; None: unknown
    n_tokens: int | None = None  # in the responder's own tokenizer, when it knows


Responder = Callable[[list[TurnRequest]], list[TurnResult]]


def count_tokens(tokenizer: Any, text: str) -> int | None:
    """Tokens of ``text`` in a model's own tokenizer (special tokens left out), or None
    when there is none (an API model): what both harnesses record as a turn's length."""
    if tokenizer is None or not hasattr(tokenizer, "encode"):
        return None
    try:
        return len(tokenizer.encode(text, add_special_tokens=False))
    except TypeError:  # tiktoken and other encoders without that keyword
        return len(tokenizer.encode(text))


def counted_result(tokenizer: Any, text: str, budget: int) -> TurnResult:
    """A turn known only as text (cached, or back from a text API): its tokens counted in
    the model's tokenizer, and the budget taken to have cut it when they reach the
    budget, since no finish reason says so (both None when there is no tokenizer)."""
    n = count_tokens(tokenizer, text)
    return TurnResult(text, None if n is None else n >= budget, n)


@dataclass
class Transcript:
    """One replayed episode: every turn's message, budget and output, and its score."""

    episode: Episode
    outputs: list[str] = field(default_factory=list)
    cut: list[bool | None] = field(default_factory=list)
    n_tokens: list[int | None] = field(default_factory=list)

    def score(self) -> EpisodeScore:
        return score_episode(self.episode, self.outputs, self.cut)

    def messages(self, system: bool = True) -> list[dict[str, str]]:
        return conversation(self.episode, self.outputs, system=system, next_user=False)

    def to_dict(self) -> dict[str, Any]:
        score = self.score()
        budgets = self.episode.turn_budgets()
        return {
            "episode_id": self.episode.episode_id,
            "turns": [
                {
                    "turn": i + 1,
                    "user": user_message(self.episode, i),
                    "budget": budgets[i],
                    "output": self.outputs[i],
                    "cut": self.cut[i],
                    "output_tokens": self.n_tokens[i],
                    "format_problems": list(score.turn_problems[i]),
                }
                for i in range(len(self.outputs))
            ],
            "verdicts": [v.to_dict() for v in score.verdicts],
            "metrics": score.metrics(),
        }


def user_message(episode: Episode, turn: int) -> str:
    """The user message that opens assistant turn ``turn`` (0-based)."""
    if turn < episode.n_tasks:
        return prompts.question_message(turn + 1, episode.tasks[turn].question)
    if turn == episode.n_tasks and episode.closing_budget > 0:
        return prompts.closing_message(episode.n_tasks)
    raise IndexError(f"episode {episode.episode_id} has no turn {turn}")


def conversation(
    episode: Episode, outputs: Sequence[str], system: bool = True, next_user: bool = True
) -> list[dict[str, str]]:
    """Chat messages: the system prompt, then user/assistant pairs for the turns done,
    then (``next_user``) the user message of the next turn. Empty assistant messages are
    kept so strict user/assistant alternation always holds."""
    messages = (
        [{"role": "system", "content": prompts.system_prompt(episode.n_tasks)}] if system else []
    )
    for i, text in enumerate(outputs):
        messages.append({"role": "user", "content": user_message(episode, i)})
        messages.append({"role": "assistant", "content": text})
    if next_user and len(outputs) < episode.n_turns:
        messages.append({"role": "user", "content": user_message(episode, len(outputs))})
    return messages


class SessionRun:
    """One episode being replayed, one turn at a time: :meth:`request` is the turn that
    needs the model now, :meth:`record` takes its answer. Turn-synchronous :func:`replay`
    and the continuously batched engine (``local_models.engine``) both drive it."""

    def __init__(self, episode: Episode, session: int = 0, system: bool = True):
        self.transcript = Transcript(episode)
        self.session, self.system = session, system
        self.budgets = episode.turn_budgets()

    @property
    def turn(self) -> int:
        return len(self.transcript.outputs)

    @property
    def done(self) -> bool:
        return self.turn >= self.transcript.episode.n_turns

    def request(self) -> TurnRequest:
        tr = self.transcript
        return TurnRequest(
            episode=tr.episode,
            turn=self.turn,
            messages=conversation(tr.episode, tr.outputs, system=self.system),
            budget=self.budgets[self.turn],
            previous_outputs=tuple(tr.outputs),
            session=self.session,
        )

    def record(self, result: TurnResult) -> None:
        self.transcript.outputs.append(result.text)
        self.transcript.cut.append(result.cut)
        self.transcript.n_tokens.append(result.n_tokens)

    def skip_silent(self) -> None:
        """Budget-0 turns never reach a model: the message is empty and the next question
        follows."""
        while not self.done and self.budgets[self.turn] == 0:
            self.record(SILENT)

    def next_request(self) -> TurnRequest | None:
        """The next turn that needs the model (after any budget-0 turns), or None."""
        self.skip_silent()
        return None if self.done else self.request()


SILENT = TurnResult("", cut=True, n_tokens=0)


def replay(
    episodes: Sequence[Episode],
    responder: Responder,
    *,
    system: bool = True,
    on_turn: Callable[[int, int], None] | None = None,
) -> list[Transcript]:
    """Replay every episode against ``responder``, one batched call per turn index."""
    runs = [SessionRun(ep, i, system) for i, ep in enumerate(episodes)]
    max_turns = max((ep.n_turns for ep in episodes), default=0)
    for t in range(max_turns):
        live = [run for run in runs if not run.done]
        asks = [run for run in live if run.budgets[t] > 0]
        requests = [run.request() for run in asks]
        results = responder(requests) if requests else []
        if len(results) != len(requests):
            raise RuntimeError(
                f"responder returned {len(results)} results for {len(requests)} requests "
                f"at turn {t + 1}"
            )
        answered = {id(run): res for run, res in zip(asks, results)}
        for run in live:
            run.record(answered.get(id(run), SILENT))
        if on_turn is not None:
            on_turn(t + 1, max_turns)
    return [run.transcript for run in runs]
