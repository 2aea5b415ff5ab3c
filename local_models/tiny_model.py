"""Small Llama-style models built entirely offline: a byte-level BPE tokenizer trained on
the benchmark's own text (digits split one by one), a chat template
that insists on strict user/assistant alternation, and a randomly initialised model.
Tests use them in seconds; the reference models train on top of the same code path."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from interrupt_bench import prompts
from interrupt_bench.config import CONFIGS
from interrupt_bench.episodes import generate_split

SPECIAL_TOKENS = [
    "<|pad|>",
    "<|bos|>",
    "<|eos|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
]
# Strict alternation, like many real templates: anything else raises.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{% set offset = 1 %}"
    "<|system|>{{ messages[0]['content'] }}<|end|>{% else %}{% set offset = 0 %}{% endif %}"
    "{% for message in messages[offset:] %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}"
    "{% endif %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}<|end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def corpus(n_episodes: int = 300, seed: int = 0) -> Iterator[str]:
    """Prompts, questions and answers of the train split: what the tokenizer must cover."""
    yield prompts.system_prompt(5)
    yield prompts.closing_message(5)
    for config in (CONFIGS["default"], CONFIGS["tasks10_budget0to100"]):
        for episode in generate_split(config, "train", n_episodes, seed):
            for k, task in enumerate(episode.tasks, start=1):
                yield prompts.question_message(k, task.question)
                yield f"<thinking task={k}>...</thinking><answer task={k}>{task.answer}</answer>"
                yield " ".join(task.accepted)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with digits split one by one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


def build_tiny_llama(
    out_dir: str | os.PathLike,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
) -> Path:
    """Save an untrained Llama and its tokenizer as a standard Hugging Face directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = train_tokenizer(corpus(), vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
