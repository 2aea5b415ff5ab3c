"""One renderer for evaluation and training: the prompt lm-eval sends for a turn is the
text training samples from, in chat and plain mode, with demonstrations, and with a chat
template that drops the system role. And the plain format shows base models no empty
assistant turn inside a demonstration."""

import re

import pytest
from transformers import AutoTokenizer

from interrupt_bench import demonstrations
from interrupt_bench.config import CONFIGS, get_config
from interrupt_bench.episodes import generate_split
from interrupt_bench.policies import policy_responder
from interrupt_bench.session import SessionRun, TurnResult, replay
from lm_eval_tasks.hook import turn_prompt
from local_models.chat import turn_deltas

# A template without a system role: Gemma's kind drops it, this one renders only
# user and assistant messages.
NO_SYSTEM = (
    "{% for m in messages %}{% if m['role'] != 'system' %}<|{{ m['role'] }}|>"
    "{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


class TemplateLM:
    """What the hook asks of an lm-eval LM to render a prompt: ``apply_chat_template``."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def apply_chat_template(self, messages, add_generation_prompt=True):
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )


def shots_of(config: str, k: int) -> list:
    train = generate_split(get_config(config), "train", 64)
    return demonstrations.as_sessions(demonstrations.pick(train, k))


@pytest.mark.parametrize("template", ["own", "no_system"])
@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("k", [0, 2])
def test_training_renders_the_prompt_lm_eval_sends(tiny_model, template, chat, k):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    if template == "no_system":
        tok.chat_template = NO_SYSTEM
    lm = TemplateLM(tok)
    shots = shots_of("tasks5_budget0to50", k)
    settings = {"chat": chat, "fewshot": shots, "fewshot_placement": "turns"}
    for episode in generate_split(get_config("tasks5_budget0to50"), "validation", 4):
        (transcript,) = replay([episode], policy_responder("oracle"))
        deltas = turn_deltas(tok, episode, chat, shots=shots)
        run = SessionRun(episode)
        for t in range(len(transcript.outputs)):
            sent = turn_prompt(lm, run.request(), settings)
            trained = "".join(d + o for d, o in zip(deltas[:t], transcript.outputs[:t]))
            trained += deltas[t]
            assert tok.encode(trained, add_special_tokens=False) == tok.encode(
                sent, add_special_tokens=False
            ), f"{episode.episode_id} turn {t + 1}"
            if template == "no_system" and chat:
                assert "You will be asked" in sent  # folded into the first user turn
            run.record(transcript_result(transcript, t))


def transcript_result(transcript, t):
    return TurnResult(transcript.outputs[t], transcript.cut[t], transcript.n_tokens[t])


EMPTY_TURN = re.compile(r"Assistant:[ \t]*\n(User:|\n|$)")


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("k", [1, 3])
def test_no_demonstration_shows_an_empty_assistant_turn(config, k):
    """On every shipped config, in both placements: each demonstration has its heading,
    the real session its own, and no demonstration reply is an empty ``Assistant:``."""
    shots = shots_of(config, k)
    (episode,) = generate_split(get_config(config), "test", 1)
    request = SessionRun(episode).request()
    plain = turn_prompt(None, request, {"chat": False, "fewshot": shots})
    demos, real = plain.split("The real session:\n")
    for i in range(1, k + 1):
        assert f"Example session {i}:\n" in demos
    assert not EMPTY_TURN.search(demos), config
    assert real.startswith("User: <question task=1>") and real.endswith("Assistant:")
    system = demonstrations.with_demonstrations(request.messages, shots, "system")[0]["content"]
    assert not EMPTY_TURN.search(system.split("The real session starts now.")[0] + "\n")


def test_the_demonstrations_hold_empty_replies_to_leave_out():
    """The check above has something to find: the oracle leaves closing turns (and
    budget-0 turns) empty in the demonstrations of most configs."""
    empty = sum(
        not m["content"]
        for config in CONFIGS
        for session in shots_of(config, 1)
        for m in session
        if m["role"] == "assistant"
    )
    assert empty >= len(CONFIGS) // 2


def test_demonstration_replies_follow_assistant_with_a_space():
    shots = shots_of("default", 1)
    (episode,) = generate_split(get_config("default"), "test", 1)
    plain = turn_prompt(None, SessionRun(episode).request(), {"chat": False, "fewshot": shots})
    replies = [m["content"] for m in shots[0] if m["role"] == "assistant" and m["content"]]
    for reply in replies:
        assert f"Assistant: {reply}\n" in plain
