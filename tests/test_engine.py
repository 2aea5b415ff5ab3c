"""The session engine: greedy turns equal per-request ``model.generate`` token for token
(float32 and bfloat16, full and sliding-window attention, multi-byte text, more sessions
than rows), sampling is reproducible from a seed whatever the batch size, and through
lm-eval's ``hf`` model ``turn_batching: auto`` (the engine) equals ``exact`` (per-request
``generate_until``) on every turn."""

import json
import logging

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from local_models.engine import Ask, Sampling, SessionEngine

from .test_lm_eval_policies import LIMIT, TASKS_DIR

BUDGETS = (8, 3, 13)  # per turn
PROMPTS = ["café 日本語 naïve", "Question 1: 2 + 2 =", "<question task=1>Sort", "Hello"]


class Chat:
    """A session whose next turn appends the last output and a fixed user line."""

    def __init__(self, tokenizer, text: str, budgets=BUDGETS):
        self.tok, self.text, self.budgets, self.done = tokenizer, text, budgets, []

    def step(self, done):
        if done is not None:
            self.done.append(done)
            self.text += done.text + "\nUser: and then? café\nAssistant:"
        if len(self.done) == len(self.budgets):
            return None
        ids = self.tok.encode(self.text, add_special_tokens=False)
        return Ask(ids, self.budgets[len(self.done)], ("<question",))


@pytest.fixture(scope="module")
def multibyte_model(tiny_model, tmp_path_factory):
    """The tiny Llama, changed so that it likes to write the single bytes of multi-byte
    characters: every token carries a constant feature that no layer writes over, and
    an untied output head turns it into a bonus for those byte tokens. Its outputs are
    full of partial characters, whose decoded text re-encodes to other ids."""
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    bytes_ids = sorted(set(tok.encode("日本語 ñ €", add_special_tokens=False)))
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        head = embed.clone()
        embed[:, 0] = 1.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0] = 0
            layer.mlp.down_proj.weight[0] = 0
        head[:, 0] = 0
        head[bytes_ids, 0] = 2.5
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(head)
    out = tmp_path_factory.mktemp("models") / "multibyte-llama"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _engine(model, tok, **kwargs):
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    return SessionEngine(model, decode, eos_ids=[tok.eos_token_id], **kwargs)


def _reference(model, tok, session: Chat) -> list[list[int]]:
    """Per-request greedy generation of every turn of ``session``'s own contexts."""
    text, out = PROMPTS_BY_ID[id(session)], []
    for budget, done in zip(session.budgets, session.done):
        ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
        gen = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=budget, do_sample=False,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )  # fmt: skip
        out.append(gen[0, ids.shape[1] :].tolist())
        text += done.text + "\nUser: and then? café\nAssistant:"
    return out


PROMPTS_BY_ID: dict[int, str] = {}


SHARED = (
    "System: you answer questions, and come back to the ones left open. "
    "User: first question, café? Assistant: the answer is 4. "
)  # a prefix every session of test_shared_prefix_* begins with


def _sessions(tok, n=6, prefix=""):
    sessions = []
    for i in range(n):
        s = Chat(tok, prefix + PROMPTS[i % len(PROMPTS)])
        PROMPTS_BY_ID[id(s)] = s.text
        sessions.append(s)
    return sessions


def _tiny_gemma3(tokenizer, dtype):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512,
        initializer_range=0.3,  # large logits: bf16 rounding must not decide the argmax
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    return Gemma3ForCausalLM(config).to(dtype).eval()


@pytest.mark.parametrize("shared", [False, True], ids=["own", "shared-prefix"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("arch", ["llama", "gemma3-sliding"])
def test_greedy_equals_per_request_generate(multibyte_model, dtype, arch, shared):
    """Token for token what per-request ``generate`` gives; with ``shared``, every
    session begins with one long prefix (longer than Gemma's window of 4) that the
    engine prefills once and every row attends to in place."""
    tok = AutoTokenizer.from_pretrained(multibyte_model)
    if arch == "llama":
        model = AutoModelForCausalLM.from_pretrained(multibyte_model, dtype=dtype).eval()
    else:
        model = _tiny_gemma3(tok, dtype)
    sessions = _sessions(tok, prefix=SHARED if shared else "")
    stats = _engine(model, tok, batch_size=4).run(sessions)  # 6 sessions on 4 rows
    assert stats.max_rows == 4
    assert stats.reused_tokens > 0  # later turns reuse the rows' caches
    if shared:
        assert stats.shared_prefix_sessions == 6
    texts = []
    for s in sessions:
        for done, ref in zip(s.done, _reference(model, tok, s)):
            assert done.ids == ref[: len(done.ids)]
            texts.append(done.text)
            if done.cut:  # the budget ran out: exactly the budget was generated
                assert done.ids == ref
    assert any(ord(c) > 127 for t in texts for c in t)  # multi-byte outputs were exercised


@pytest.mark.parametrize("arch", ["llama", "gemma3-sliding"])
def test_greedy_with_mixed_prefixes(multibyte_model, arch):
    """Sessions on two different shared prefixes, one that shares only the first part of
    a prefix, and two that share none, in the same passes: each query attends to its own
    prefix only (or to part of it, or to none), and every turn is still per-request
    ``generate``'s, token for token (float32)."""
    tok = AutoTokenizer.from_pretrained(multibyte_model)
    if arch == "llama":
        model = AutoModelForCausalLM.from_pretrained(multibyte_model).eval()
    else:
        model = _tiny_gemma3(tok, torch.float32)
    other = "System: a different preamble for other sessions, long enough to be shared. "
    partial = SHARED[: len(SHARED) // 3] + "then something else entirely. "
    prefixes = [SHARED, SHARED, other, SHARED, other, partial, "", ""]
    sessions = []
    for i, prefix in enumerate(prefixes):
        chat = Chat(tok, prefix + PROMPTS[i % len(PROMPTS)])
        PROMPTS_BY_ID[id(chat)] = chat.text
        sessions.append(chat)
    engine = _engine(model, tok, batch_size=8)
    stats = engine.run(sessions)
    assert stats.shared_prefixes == 2  # SHARED and other, each prefilled once
    assert stats.shared_prefix_sessions == 6  # the partial one sits on part of SHARED
    for s in sessions:
        for done, ref in zip(s.done, _reference(model, tok, s)):
            assert done.ids == ref[: len(done.ids)]
            if done.cut:
                assert done.ids == ref


def test_turn_text_is_the_decode_of_exactly_the_generated_ids(multibyte_model):
    """The bug this engine fixed: re-encoding decoded text ('café \\ufffd') gives more ids
    than were generated, and cutting those cut the text short."""
    tok = AutoTokenizer.from_pretrained(multibyte_model)
    model = AutoModelForCausalLM.from_pretrained(multibyte_model, dtype=torch.float32).eval()
    sessions = _sessions(tok, 4)
    _engine(model, tok, batch_size=2).run(sessions)
    for s in sessions:
        for budget, done in zip(s.budgets, s.done):
            assert len(done.ids) <= budget
            assert done.cut == (len(done.ids) == budget and not done.eos)
            text = tok.decode(done.ids[:-1] if done.eos else done.ids, skip_special_tokens=True)
            assert done.text == text.split("<question")[0]


def test_sampling_is_reproducible_whatever_the_batch_size(multibyte_model):
    tok = AutoTokenizer.from_pretrained(multibyte_model)
    model = AutoModelForCausalLM.from_pretrained(multibyte_model, dtype=torch.float32).eval()

    def sample(batch_size, seed):
        sessions = _sessions(tok, 5)
        sampling = Sampling(greedy=False, temperature=1.0, seed=seed)
        _engine(model, tok, batch_size=batch_size, sampling=sampling).run(sessions)
        return [[d.ids for d in s.done] for s in sessions]

    first = sample(5, seed=7)
    assert sample(2, seed=7) == first
    assert sample(5, seed=8) != first


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="num_beams"):
        Sampling.from_generation_kwargs({"num_beams": 4})
    assert Sampling.from_generation_kwargs({"do_sample": False, "temperature": 0}).greedy
    assert not Sampling.from_generation_kwargs({"do_sample": True, "temperature": 0.7}).greedy


def test_kv_bound_and_context_length_errors(multibyte_model):
    tok = AutoTokenizer.from_pretrained(multibyte_model)
    model = AutoModelForCausalLM.from_pretrained(multibyte_model, dtype=torch.float32).eval()
    with pytest.raises(MemoryError, match="max_cache_gb"):
        _engine(model, tok, batch_size=2, max_cache_gb=1e-6).run(_sessions(tok, 2))
    with pytest.raises(ValueError, match="max_length 10"):
        _engine(model, tok, max_length=10).run(_sessions(tok, 1))


def _turns(result):
    return {
        s["doc"]["episode_id"]: [
            (session["outputs"], session["cut"])
            for session in json.loads(s["resps"][0][0])["sessions"]
        ]
        for s in result["samples"]["interrupt_bench"]
    }


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "plain"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_lm_eval_auto_equals_exact(multibyte_model, small_dataset, caplog, chat, dtype):
    """Through lm-eval's ``hf`` model with the default shot (a prefix all sessions share):
    the engine (``auto``) gives every turn the text and cut of per-request
    ``generate_until`` calls (``exact``)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(multibyte_model), dtype=dtype, device="cpu", batch_size=4)

    def run(mode):
        meta = {"dataset_path": str(small_dataset), "turn_batching": mode}
        manager = TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata=meta)
        result = simple_evaluate(
            model=lm, tasks=["interrupt_bench"], task_manager=manager, log_samples=True,
            limit=LIMIT, apply_chat_template=chat,
        )  # fmt: skip
        return _turns(result)

    with caplog.at_level(logging.INFO, logger="interrupt_bench"):
        auto = run("auto")
    assert "on the session engine" in caplog.text
    exact = run("exact")
    assert auto == exact
    outputs = [o for sessions in auto.values() for outs, _ in sessions for o in outs]
    assert any(ord(c) > 127 for o in outputs for c in o)


def test_use_cache_resumes_engine_turns(multibyte_model, small_dataset, tmp_path):
    """``--use_cache DB`` on the engine path: every greedy turn is stored under the
    per-request key, and a rerun whose model cannot generate at all reads them back."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(
        include_path=TASKS_DIR, include_defaults=False,
        metadata={"dataset_path": str(small_dataset)},
    )  # fmt: skip
    lm = HFLM(pretrained=str(multibyte_model), dtype="float32", device="cpu", batch_size=4)
    db = str(tmp_path / "cache")

    def run():
        result = simple_evaluate(
            model=lm, tasks=["interrupt_bench"], task_manager=manager, log_samples=True,
            limit=4, use_cache=db,
        )  # fmt: skip
        return {k: [outs for outs, _ in v] for k, v in _turns(result).items()}

    first = run()

    def broken(*args, **kwargs):
        raise RuntimeError("the model must not be called: every turn is cached")

    lm._model.forward = broken
    assert run() == first


def test_runs_under_bf16_autocast(multibyte_model):
    """Training rollouts run inside ``accelerator.autocast()``: there rotary embeddings
    leave queries and keys in float32 while values are bfloat16."""
    tok = AutoTokenizer.from_pretrained(multibyte_model)
    model = AutoModelForCausalLM.from_pretrained(multibyte_model, dtype=torch.float32).eval()
    sessions = _sessions(tok, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        stats = _engine(model, tok, batch_size=2).run(sessions)
    assert stats.generated_tokens > 0
    assert all(len(s.done) == len(BUDGETS) for s in sessions)
