"""Training rollouts on the session engine: tokens kept exactly as sampled, the loss mask
covers exactly the sampled tokens, log-probs match a recomputation, and a seed gives the
same sessions."""

import dataclasses

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from interrupt_bench.config import get_config
from interrupt_bench.episodes import generate_split
from local_models.chat import turn_deltas
from training.rollouts import sample_sessions


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(
        tiny_model
    )


EPISODES = generate_split(get_config("tasks5_budget0to50"), "train", 4)


@pytest.mark.parametrize("chat", [True, False])
def test_loss_mask_covers_exactly_the_sampled_tokens(model_and_tokenizer, chat):
    model, tok = model_and_tokenizer
    rollouts = sample_sessions(model, tok, EPISODES, chat=chat, seed=0)
    for episode, transcript, session in zip(EPISODES, rollouts.transcripts, rollouts.sessions):
        # Every sampled id is a counted token or the EOS that ended its turn.
        eos = sum(1 for i, s in zip(session.ids, session.sampled) if s and i == tok.eos_token_id)
        assert sum(session.sampled) == sum(transcript.n_tokens) + eos
        assert all(n <= b for n, b in zip(transcript.n_tokens, episode.turn_budgets()))
        # What is not sampled is exactly the template, turn by turn.
        template = [
            tok.encode(d, add_special_tokens=False) for d in turn_deltas(tok, episode, chat)
        ]
        not_sampled = [i for i, s in zip(session.ids, session.sampled) if not s]
        assert not_sampled == [i for delta in template for i in delta]
        # And what is sampled decodes to the outputs the scorer saw.
        sampled = [i for i, s in zip(session.ids, session.sampled) if s]
        assert tok.decode(sampled, skip_special_tokens=True) == "".join(transcript.outputs)
        assert all(lp == 0.0 for lp, s in zip(session.logprobs, session.sampled) if not s)
        # Each sampled id carries the turn it was written in, and each turn's ids decode to
        # that turn's output (budget-0 turns write none and so mark none).
        assert all((t > 0) == s for t, s in zip(session.turn, session.sampled))
        for k, output in enumerate(transcript.outputs, start=1):
            ids = [i for i, t in zip(session.ids, session.turn) if t == k]
            assert tok.decode(ids, skip_special_tokens=True) == output


def test_recomputed_logprobs_match_the_sampler(model_and_tokenizer):
    model, tok = model_and_tokenizer
    for s in sample_sessions(model, tok, EPISODES, temperature=0.7, seed=1).sessions:
        ids = torch.tensor([s.ids])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].float() / 0.7
        logp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None]).squeeze(1)
        mask = torch.tensor(s.sampled[1:])
        assert (logp[mask] - torch.tensor(s.logprobs[1:])[mask]).abs().max() < 1e-4


def test_a_seed_gives_the_same_sessions_whatever_the_batch_size(model_and_tokenizer):
    model, tok = model_and_tokenizer
    first = sample_sessions(model, tok, EPISODES, seed=3)
    again = sample_sessions(model, tok, EPISODES, seed=3, batch_size=2)
    other = sample_sessions(model, tok, EPISODES, seed=4)
    assert [s.ids for s in again.sessions] == [s.ids for s in first.sessions]
    assert [t.outputs for t in again.transcripts] == [t.outputs for t in first.transcripts]
    assert [s.ids for s in other.sessions] != [s.ids for s in first.sessions]


def test_closing_branches_share_the_greedy_history_and_sample_only_the_closing_turn(
    model_and_tokenizer,
):
    model, tok = model_and_tokenizer
    k = 3
    out = sample_sessions(model, tok, EPISODES[:2], temperature=1.0, seed=5, closing_branches=k)
    greedy = sample_sessions(model, tok, EPISODES[:2], greedy=True)
    assert len(out.transcripts) == 2 * k
    for e, episode in enumerate(EPISODES[:2]):
        group = out.transcripts[e * k : (e + 1) * k]
        sessions = out.sessions[e * k : (e + 1) * k]
        n = episode.n_tasks
        for transcript, session in zip(group, sessions):
            assert transcript.episode == episode
            # The history is the greedy session's, turn for turn and id for id.
            assert transcript.outputs[:n] == greedy.transcripts[e].outputs[:n]
            assert transcript.cut[:n] == greedy.transcripts[e].cut[:n]
            first = session.sampled.index(True) if True in session.sampled else len(session.ids)
            assert session.ids[:first] == greedy.sessions[e].ids[:first]
            # Only the closing turn is sampled, and its ids decode to the closing output.
            assert set(t for t in session.turn if t) <= {n + 1}
            closing = [i for i, t in zip(session.ids, session.turn) if t == n + 1]
            assert tok.decode(closing, skip_special_tokens=True) == transcript.outputs[n]
            assert len(transcript.outputs) == episode.n_turns
        # At temperature 1 the tiny model's closing turns differ within a group.
        assert len({tuple(s.ids) for s in sessions}) > 1


def test_closing_branches_refuse_episodes_without_a_closing_turn(model_and_tokenizer):
    model, tok = model_and_tokenizer
    config = dataclasses.replace(get_config("tasks5_budget0to50"), closing_budget=0)
    silent = generate_split(config, "train", 1)
    with pytest.raises(ValueError, match="no closing turn"):
        sample_sessions(model, tok, silent, closing_branches=2)
