"""The session, played turn by turn in an Inspect solver.

The protocol's :class:`interrupt_bench.session.SessionRun` decides every turn (its
messages, its budget, budget-0 turns recorded empty without a model call, the closing
turn); this solver only answers the turns that need the model: each one is a ``generate``
call on the task's model with that turn's budget as ``max_tokens`` and the next
question's opening tag as a stop string. The text kept is the text up to the first stop
string, so the cut text stays in the conversation the next turn sees. The played
sessions go into the sample's store for the scorer and the log."""

from __future__ import annotations

from collections.abc import Sequence

from inspect_ai.log import transcript
from inspect_ai.model import (
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageUser,
    GenerateConfig,
    Model,
    ModelOutput,
    get_model,
)
from inspect_ai.solver import Generate, Solver, TaskState, solver

from inspect_tasks.dataset import Messages, demonstration_sessions, with_shots
from interrupt_bench.controls import CONTROL_BUDGET, labelled_sessions
from interrupt_bench.demonstrations import DEFAULT_RULE, DEFAULT_SHOTS
from interrupt_bench.episodes import Episode
from interrupt_bench.records import session_record
from interrupt_bench.session import SessionRun, Transcript, TurnRequest, TurnResult, count_tokens
from interrupt_bench.turn_contract import STOP_SEQUENCES

STORE_KEY = "interrupt_bench_sessions"


class ModelFailed(RuntimeError):
    """The model failed during a session: the eval stops rather than score silent zeros."""


def chat_messages(messages: Messages) -> list[ChatMessage]:
    """Protocol messages (role/content dicts) as Inspect chat messages."""
    kinds = {
        "system": ChatMessageSystem,
        "user": ChatMessageUser,
        "assistant": ChatMessageAssistant,
    }
    return [kinds[m["role"]](content=m["content"]) for m in messages]


def kept_text(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text a turn keeps (cut at the first stop string) and whether a stop string
    ended it. Providers that stop on the string after generating it (``hf``) return it
    in the text; API servers leave it out; the kept text is the same."""
    stopped = False
    for s in stops:
        if s in text:
            text, stopped = text.split(s)[0], True
    return text, stopped


def turn_result(model: Model, output: ModelOutput, budget: int, stops: Sequence[str]) -> TurnResult:
    """The turn as the protocol records it. Cut: the provider's stop reason when it gives
    one (``max_tokens``: the budget ended it); otherwise (``hf`` says ``unknown``) not cut when
    the call generated fewer tokens than the budget (``hf`` counts the longest of its
    batch), else the kept text's length in the model's tokens against the budget, as
    lm-eval's ``generate_until`` path decides; None (scored as cut) when neither is
    known. A turn whose text re-encodes to fewer tokens than were generated (or that
    generated special tokens only) reads as not cut here, where the session engine,
    which sees the ids, says cut."""
    text, stopped = kept_text(output.completion, stops)
    n = count_tokens(getattr(model.api, "tokenizer", None), text)  # hf holds one; APIs none
    if stopped:
        cut: bool | None = False
    elif output.stop_reason in ("max_tokens", "model_length"):
        cut = True
    elif output.stop_reason == "stop":
        cut = False
    elif output.usage is not None and output.usage.output_tokens < budget:
        cut = False  # the whole batch stopped before the budget, this turn too
    else:
        cut = None if n is None else n >= budget
    if n is None and output.usage is not None and output.stop_reason != "unknown":
        n = output.usage.output_tokens
    return TurnResult(text, cut, n)


async def play_turn(model: Model, request: TurnRequest, shots: Sequence[Messages]) -> TurnResult:
    """One model turn: its messages with the demonstrations, its budget as ``max_tokens``."""
    messages = chat_messages(with_shots(request.messages, shots))
    config = GenerateConfig(max_tokens=request.budget, stop_seqs=list(STOP_SEQUENCES))
    episode, turn = request.episode, request.turn + 1
    try:
        output = await model.generate(messages, config=config)
    except Exception as exc:
        raise ModelFailed(
            f"interrupt_bench: the model failed at turn {turn} of {episode.episode_id} "
            f"({type(exc).__name__}: {str(exc)[:300]}). Nothing was scored; fix the model or "
            "server and run again"
        ) from None
    if output.error:
        raise ModelFailed(
            f"interrupt_bench: the model returned an error at turn {turn} of "
            f"{episode.episode_id} ({output.error[:300]}). Nothing was scored; fix the model "
            "or server and run again"
        )
    return turn_result(model, output, request.budget, STOP_SEQUENCES)


def shown_messages(played: Transcript, condition: str) -> list[ChatMessage]:
    """A played session as the log viewer shows it: each assistant message carries its
    turn, budget and whether the budget cut it."""
    shown = chat_messages(played.messages())
    budgets = played.episode.turn_budgets()
    assistants = [m for m in shown if isinstance(m, ChatMessageAssistant)]
    for i, message in enumerate(assistants):
        message.metadata = {
            "condition": condition,
            "turn": i + 1,
            "budget": budgets[i],
            "cut": played.cut[i],
            "output_tokens": played.n_tokens[i],
        }
    return shown


def turn_note(played: Transcript, condition: str) -> str:
    """One line per turn for the viewer's transcript: budget, tokens, cut."""
    budgets = played.episode.turn_budgets()
    lines = [f"**{played.episode.episode_id}** ({condition})", ""]
    for i, (text, cut, n) in enumerate(zip(played.outputs, played.cut, played.n_tokens)):
        how = "silent (budget 0)" if budgets[i] == 0 else ("cut" if cut else "ended by the model")
        tokens = "?" if n is None else n
        lines.append(
            f"- turn {i + 1}: budget {budgets[i]}, {tokens} tokens, {how}: `{text[:60]!r}`"
        )
    return "\n".join(lines)


@solver
def interrupt_session(
    dataset_path: str | None = None,
    config: str = "default",
    num_fewshot: int = DEFAULT_SHOTS,
    condition: str = "interrupted",
    budget_cap: int = CONTROL_BUDGET,
    fewshot_rule: str = DEFAULT_RULE,
) -> Solver:
    """Play each sample's episode under ``condition`` (the paired controls play the
    interrupted session, the nocut one and one per task), with ``num_fewshot`` oracle
    demonstrations of ``config``'s train split as earlier turns."""
    shots = demonstration_sessions(dataset_path, config, num_fewshot, fewshot_rule)

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        model = get_model()
        episode = Episode.from_row(state.metadata["row"])
        sessions, shown = [], None
        for label, session in labelled_sessions(episode, condition, budget_cap):
            run = SessionRun(session)
            while (request := run.next_request()) is not None:
                run.record(await play_turn(model, request, shots))
            transcript().info(turn_note(run.transcript, label), source="interrupt_bench")
            sessions.append(session_record(label, run.transcript))
            if shown is None:
                shown = shown_messages(run.transcript, label)
        state.store.set(STORE_KEY, sessions)
        state.messages = shown or state.messages
        state.output = ModelOutput.from_content(model.name, sessions[0]["outputs"][-1])
        return state

    return solve
