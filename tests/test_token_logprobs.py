"""The training loss's log-probs: the LM head on the sampled positions only gives the
numbers (and gradients) of full logits, for a plain model and through peft."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from training.reinforce import token_logprobs


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
