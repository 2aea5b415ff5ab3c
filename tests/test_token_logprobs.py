"""The training loss's log-probs: the LM head on the sampled positions only gives the
numbers (and gradients) of full logits, for a plain model and through peft."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from training.loss import token_logprobs


@pytest.mark.parametrize("lora", [False, True])
def test_selected_positions_equal_full_logits(tiny_model, lora):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    ids = torch.randint(3, 400, (3, 17))
    attn = torch.ones_like(ids)
    attn[2, 12:] = 0
    mask = torch.rand(3, 16) < 0.4
    mask[2, 11:] = False
    logp, entropy = token_logprobs(model, ids, attn, 0.7, mask.float())
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float() / 0.7
    full = torch.log_softmax(logits, -1)
    want = full.gather(-1, ids[:, 1:, None]).squeeze(-1)
    want_entropy = -(full.exp() * full).sum(-1)
    assert torch.allclose(logp[mask], want[mask], atol=1e-5)
    assert torch.allclose(entropy[mask], want_entropy[mask], atol=1e-5)
    assert bool((logp[~mask] == 0).all()) and bool((entropy[~mask] == 0).all())
    # The head is back in place and gradients reach the trainable weights.
    assert not isinstance(model.get_output_embeddings(), torch.nn.Identity)
    (-logp.sum()).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


def _lora_model(tiny_model, arch):
    """The tiny Llama, or a tiny Gemma 3 whose sliding window is shorter than the
    prefixes below, in float32 with a non-zero LoRA adapter on q and v, in train mode."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from .test_engine import _tiny_gemma3

    if arch == "llama":
        base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    else:
        base = _tiny_gemma3(AutoTokenizer.from_pretrained(tiny_model), torch.float32)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(base, lora).train()


@pytest.mark.parametrize("arch", ["llama", "gemma3-sliding"])
def test_shared_prefix_cache_gives_the_same_logprobs_and_gradients(tiny_model, arch):
    """Rows that share a prefix: running it once without gradient and reusing its keys
    and values gives the log-probs of the full forward pass, and gradients still reach
    the adapter (sliding-window layers included, the window shorter than the prefix)."""
    from training.loss import prefix_cache, shared_prefix_length

    model = _lora_model(tiny_model, arch)
    torch.manual_seed(1)
    prefix = torch.randint(3, 300, (9,)).tolist()

    class Session:
        def __init__(self, n):
            self.ids = prefix + torch.randint(3, 300, (n,)).tolist()
            self.sampled = [False] * (len(prefix) + 2) + [True] * (n - 2)

    sessions = [Session(8), Session(5), Session(11)]
    n_prefix = shared_prefix_length(sessions)
    assert len(prefix) <= n_prefix <= len(prefix) + 2  # the first sampled id bounds it
    width = max(len(s.ids) for s in sessions)
    ids = torch.zeros(3, width, dtype=torch.long)
    attn = torch.zeros_like(ids)
    mask = torch.zeros(3, width - 1)
    for row, s in enumerate(sessions):
        ids[row, : len(s.ids)] = torch.tensor(s.ids)
        attn[row, : len(s.ids)] = 1
        mask[row, : len(s.ids) - 1] = torch.tensor(s.sampled[1:], dtype=torch.float)

    full, _ = token_logprobs(model, ids, attn, 1.0, mask)
    full.sum().backward()
    want_grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    cache = prefix_cache(model, sessions[0].ids[: n_prefix - 1], ids.device)
    reused, _ = token_logprobs(model, ids, attn, 1.0, mask, cache)
    assert torch.allclose(reused, full, atol=1e-5)
    reused.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    # Only the gradient through the prefix's keys and values is left out: the q/v
    # adapters still get most of theirs.
    cos = torch.nn.functional.cosine_similarity(
        torch.cat([g.flatten() for g in grads]), torch.cat([g.flatten() for g in want_grads]), 0
    )
    print(f"cosine(reused, full gradient) = {float(cos):.3f}")
    assert cos > 0.5


@pytest.mark.parametrize("arch", ["llama", "gemma3-sliding"])
@pytest.mark.parametrize("with_prefix", [False, True])
def test_shared_history_run_once_gives_the_full_logprobs_and_gradients(
    tiny_model, arch, with_prefix
):
    """Rows that share a whole history before their first sampled id (closing branches):
    running it once for one row, with gradient, and continuing every row from its keys and
    values gives the log-probs and the gradients of running it in every row, on top of a
    no-gradient shared prefix or without one."""
    from training.loss import prefix_cache

    model = _lora_model(tiny_model, arch)
    torch.manual_seed(2)
    history = torch.randint(3, 300, (14,)).tolist()
    rows = [history + torch.randint(3, 300, (n,)).tolist() for n in (6, 3, 5)]
    width = max(map(len, rows))
    ids = torch.zeros(3, width, dtype=torch.long)
    attn = torch.zeros_like(ids)
    mask = torch.zeros(3, width - 1)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        attn[r, : len(row)] = 1
        mask[r, len(history) - 1 : len(row) - 1] = 1  # every id after the history
    n_prefix = 5 if with_prefix else 0
    shared = len(history) - 1 - n_prefix

    def run(**kwargs):
        model.zero_grad()
        logp, _ = token_logprobs(model, ids, attn, 1.0, mask, **kwargs)
        (logp * torch.arange(1, width)).sum().backward()  # weights differ by position
        return logp.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    prefix = prefix_cache(model, history[:n_prefix], ids.device) if with_prefix else None
    want, want_grads = run(prefix=prefix)
    got, grads = run(prefix=prefix, shared=shared)
    assert torch.allclose(got, want, atol=1e-5)
    for g, w in zip(grads, want_grads):
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="inside the shared prefix"):
        token_logprobs(model, ids, attn, 1.0, mask, prefix=prefix, shared=shared + 1)
