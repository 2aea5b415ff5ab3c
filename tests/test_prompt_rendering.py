"""One renderer for evaluation and training: for every turn of a session, the token ids
a training rollout samples from are the ids lm-eval's ``hf`` model is sent, on both of
the hook's paths (the session engine's ids, the text ``generate_until`` tokenises), in
chat and plain mode, with demonstrations, with ``--system_instruction``, with chat
templates that drop or refuse the system role, and with a tokenizer that adds a BOS.
And the plain format shows base models no empty assistant turn inside a demonstration."""

from __future__ import annotations

import re

import pytest

from interrupt_bench import demonstrations
from interrupt_bench.config import CONFIGS, get_config
from interrupt_bench.episodes import Episode, generate_split
from interrupt_bench.policies import policy_responder
from interrupt_bench.session import SessionRun, replay
from lm_eval_tasks.backends import EngineBackend, SessionDriver, eos_ids, replay_sessions
from lm_eval_tasks.responder import GenerateUntilResponder
from lm_eval_tasks.settings import RunSettings
from lm_eval_tasks.turns import turn_prompt
from local_models.chat import hf_turn_contract, turn_delta_ids
from local_models.engine import Ask, Generated
from training.rollouts import RolloutSession

# Gemma-style templates: one renders only user and assistant messages (the system
# prompt silently gone), the other refuses a system message as Gemma 2's does.
DROPS_SYSTEM = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] != 'system' %}"
    "<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
REFUSES_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}" + DROPS_SYSTEM
)
INSTRUCTION = "Answer in English."


@pytest.fixture(scope="module")
def hf_lm(tiny_model):
    """lm-eval's own ``hf`` model on the tiny Llama: its ``apply_chat_template`` and
    ``tok_encode`` are what evaluation renders and tokenises with."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(tiny_model), device="cpu", batch_size=1)


def shots_of(config: str, k: int) -> list:
    train = generate_split(get_config(config), "train", 64)
    return demonstrations.as_sessions(demonstrations.pick(train, k))


def _drive(driver, outputs: list[str], tokenizer) -> dict[int, list[int]]:
    """Each turn's context ids an engine driver asks for, the oracle's text answering
    each turn (as the ids the engine would have generated)."""
    asked: dict[int, list[int]] = {}
    ask = driver.step(None)
    while ask is not None:
        assert isinstance(ask, Ask)
        turn = driver.run.turn
        asked[turn] = list(ask.context)
        ids = tokenizer.encode(outputs[turn], add_special_tokens=False)
        ask = driver.step(Generated(ids, outputs[turn], False, [0.0] * len(ids)))
    return asked


def _sent_through_generate_until(lm, episode: Episode, settings: RunSettings, outputs: list[str]):
    """Each turn's ids on the ``generate_until`` path: the prompts the hook's responder
    hands to ``generate_until``, tokenised as ``HFLM.generate_until`` tokenises them
    (``tok_batch_encode``); the model's answers are the oracle's."""
    sent: dict[int, list[int]] = {}

    def generate_until(instances):
        texts = []
        for instance in instances:
            turn = instance.doc["turn"] - 1
            sent[turn] = lm.tok_batch_encode([instance.arguments[0]])[0][0].tolist()
            texts.append(outputs[turn])
        return texts

    lm.generate_until = generate_until
    try:
        replay([episode], GenerateUntilResponder(lm, [settings]))
    finally:
        del lm.generate_until
    return sent


def assert_training_sees_what_lm_eval_sends(
    lm, episodes, settings: RunSettings, first_turn_only: bool = False
) -> int:
    """For every turn the model answers (or only the first): training's context ids
    (``RolloutSession`` over ``turn_delta_ids``) equal the session engine's
    (``SessionDriver``) and the ids of the prompt ``generate_until`` gets. Returns the
    number of turns compared."""
    tok, chat = lm.tokenizer, settings.chat
    compared = 0
    for episode in episodes:
        (oracle,) = replay([episode], policy_responder("oracle"))
        outputs = list(oracle.outputs)
        deltas = turn_delta_ids(
            tok, episode, chat, settings.fewshot, settings.fewshot_placement,
            settings.system_instruction,
        )  # fmt: skip
        contract = hf_turn_contract(tok, lm.model, chat)
        assert list(contract.stop) == settings.stop_strings()  # one turn contract
        assert set(contract.eos_ids) == eos_ids(lm)

        def decode(ids):
            return tok.decode(ids, skip_special_tokens=True)

        session = RolloutSession(SessionRun(episode), deltas, contract, decode)
        trained = _drive(session, outputs, tok)
        engine = _drive(SessionDriver(lm, SessionRun(episode), settings, {}), outputs, tok)
        sent = _sent_through_generate_until(lm, episode, settings, outputs)
        assert trained.keys() == engine.keys() == sent.keys() and trained
        for turn, ids in list(trained.items())[: 1 if first_turn_only else None]:
            where = f"{episode.episode_id} turn {turn + 1}"
            assert ids == engine[turn], f"session engine, {where}"
            assert ids == sent[turn], f"generate_until, {where}"
        compared += 1 if first_turn_only else len(trained)
    return compared


@pytest.fixture
def tokenizer_as(hf_lm):
    """Sets the evaluated tokenizer's chat template and whether it adds a BOS, and puts
    both back afterwards."""
    from tokenizers.processors import TemplateProcessing

    tok = hf_lm.tokenizer
    template, processor = tok.chat_template, tok.backend_tokenizer.post_processor

    def apply(chat_template: str | None, bos: bool) -> None:
        if chat_template is not None:
            tok.chat_template = chat_template
        if bos:
            tok.backend_tokenizer.post_processor = TemplateProcessing(
                single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, tok.bos_token_id)]
            )

    yield apply
    tok.chat_template, tok.backend_tokenizer.post_processor = template, processor


@pytest.mark.parametrize("bos", [False, True], ids=["no_bos", "adds_bos"])
@pytest.mark.parametrize("template", ["plain", "own", "drops_system", "refuses_system"])
@pytest.mark.parametrize("demos", ["none", "turns", "system"])
def test_training_samples_from_the_ids_lm_eval_sends(hf_lm, tokenizer_as, template, bos, demos):
    chat_template = {"drops_system": DROPS_SYSTEM, "refuses_system": REFUSES_SYSTEM}
    tokenizer_as(chat_template.get(template), bos)
    if bos:
        assert hf_lm.tok_encode("hi")[0] == hf_lm.tokenizer.bos_token_id
    settings = RunSettings(
        chat=template != "plain",
        fewshot=shots_of("tasks5_budget0to50", 0 if demos == "none" else 2),
        fewshot_placement="turns" if demos == "none" else demos,
        system_instruction=INSTRUCTION if demos == "system" else None,
    )
    episodes = generate_split(get_config("tasks5_budget0to50"), "validation", 3)
    assert assert_training_sees_what_lm_eval_sends(hf_lm, episodes, settings) >= 3
    if template in ("drops_system", "refuses_system"):  # folded into the first user turn
        prompt = turn_prompt(hf_lm, SessionRun(episodes[0]).request(), settings)
        assert prompt.startswith(f"{hf_lm.tokenizer.bos_token}<|user|>")
        assert "You will be asked" in prompt and "<|system|>" not in prompt


GEMMA_MERGES = (
    "Gemma 3 in plain mode: evaluation re-encodes each turn's whole prompt, where the "
    "prompt's 'Assistant:' and an answer's '<answer' merge into the token ':<'; training "
    "keeps the ids the model sampled after ':'"
)

LATER_TURNS_DIFFER = pytest.mark.xfail(strict=True, reason=GEMMA_MERGES)


@pytest.mark.real_model
@pytest.mark.parametrize(
    "name,first_turn_only",
    [
        ("smollm2-135m-instruct", False),
        ("gemma-3-270m", True),
        pytest.param("gemma-3-270m", False, marks=LATER_TURNS_DIFFER),
    ],
)  # fmt: skip
def test_real_models_train_on_the_ids_lm_eval_sends(name, first_turn_only):
    """The real tokenizers and templates: SmolLM2's template in chat mode, and plain
    mode; Gemma 3 270M (no chat template) in plain mode, where its tokenizer's BOS leads
    the first prompt in evaluation and in training alike. Later Gemma turns differ at the
    boundary of the model's own text (``GEMMA_MERGES``): training samples from the ids
    the model produced, evaluation from the text re-encoded, as lm-eval sends it."""
    from lm_eval.models.huggingface import HFLM

    from local_models import registry as models

    if not models.is_cached(name):
        pytest.skip(f"{name} is not cached: interrupt-bench-models fetch {name}")
    path = models.model_path(name)
    lm = HFLM(pretrained=str(path), device="cpu", batch_size=1)
    episodes = generate_split(get_config("tasks5_budget0to50"), "validation", 2)
    for chat in [True, False] if models.has_chat_template(path) else [False]:
        for k in (0, 2):
            settings = RunSettings(chat=chat, fewshot=shots_of("tasks5_budget0to50", k),
                                   fewshot_placement="turns")  # fmt: skip
            compared = assert_training_sees_what_lm_eval_sends(
                lm, episodes, settings, first_turn_only
            )
            assert compared >= 2


EMPTY_TURN = re.compile(r"Assistant:[ \t]*\n(User:|\n|$)")


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("k", [1, 3])
def test_no_demonstration_shows_an_empty_assistant_turn(config, k):
    """On every shipped config, in both placements: each demonstration has its heading,
    the real session its own, and no demonstration reply is an empty ``Assistant:``."""
    shots = shots_of(config, k)
    (episode,) = generate_split(get_config(config), "test", 1)
    request = SessionRun(episode).request()
    plain = turn_prompt(None, request, RunSettings(chat=False, fewshot=shots))
    demos, real = plain.split("The real session:\n")
    for i in range(1, k + 1):
        assert f"Example session {i}:\n" in demos
    assert not EMPTY_TURN.search(demos), config
    assert real.startswith("User: <question task=1>") and real.endswith("Assistant:")
    system = demonstrations.with_demonstrations(request.messages, shots, "system")[0]["content"]
    assert not EMPTY_TURN.search(system.split("The real session starts now.")[0] + "\n")


def test_the_demonstrations_hold_empty_replies_to_leave_out():
    """The check above has something to find: the demonstrations hold empty replies
    (budget-0 turns, a task cut to nothing) in several configs."""
    empty = sum(
        not m["content"]
        for config in CONFIGS
        for session in shots_of(config, 1)
        for m in session
        if m["role"] == "assistant"
    )
    assert empty >= 3


def test_demonstration_replies_follow_assistant_with_a_space():
    shots = shots_of("default", 1)
    (episode,) = generate_split(get_config("default"), "test", 1)
    plain = turn_prompt(None, SessionRun(episode).request(), RunSettings(chat=False, fewshot=shots))
    replies = [m["content"] for m in shots[0] if m["role"] == "assistant" and m["content"]]
    for reply in replies:
        assert f"Assistant: {reply}\n" in plain


def _greedy_turns_both_ways(lm, episodes, chat: bool, shots: list):
    """Each session's turns (text and cut) as the lm-eval hook generates them on the
    session engine, and as training's greedy rollouts generate them."""
    from training.rollouts import sample_sessions

    settings = RunSettings(chat=chat, fewshot=shots, fewshot_placement="turns",
                           system_instruction=None, generation_kwargs={})  # fmt: skip
    evaluated = replay_sessions(EngineBackend(lm), episodes, [settings] * len(episodes)).transcripts
    rollouts = sample_sessions(lm.model, lm.tokenizer, episodes, chat=chat, greedy=True,
                               shots=shots)  # fmt: skip
    return [list(zip(t.outputs, t.cut)) for t in evaluated], [
        list(zip(t.outputs, t.cut)) for t in rollouts.transcripts
    ]


@pytest.mark.parametrize("chat", [True, False])
def test_greedy_rollouts_are_the_turns_lm_eval_generates(hf_lm, chat):
    """One turn contract: training's greedy rollouts stop where evaluation stops (the
    same stop strings, EOS ids and budgets), so they write the turns the hook writes."""
    episodes = generate_split(get_config("tasks5_budget0to50"), "validation", 4)
    evaluated, trained = _greedy_turns_both_ways(
        hf_lm, episodes, chat, shots_of("tasks5_budget0to50", 1)
    )
    assert trained == evaluated
