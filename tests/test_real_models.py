"""The real pretrained models, end to end. Marked ``real_model`` and skipped unless the
model is in the cache (``interrupt-bench-models fetch smollm2-135m-instruct``
and ``... fetch gemma-3-270m``): CI downloads no model. Run them with
``pytest -m real_model -v``."""

from __future__ import annotations

import json

import pytest

from local_models import registry as models

from .conftest import ROOT, samples_file
from .test_lm_eval_cli import run_lm_eval

pytestmark = pytest.mark.real_model


def need(name: str):
    if not models.is_cached(name):
        pytest.skip(f"{name} is not cached: interrupt-bench-models fetch {name}")
    return models.model_path(name)


def lm_eval_bf16(path, dataset, out, limit: int, *extra: str, dtype: str = "bfloat16",
                 tasks: str = "interrupt_bench"):  # fmt: skip
    """The real ``lm_eval`` CLI on a cached real model, bf16 on the CPU."""
    proc = run_lm_eval(
        "--model", "hf", "--model_args", f"pretrained={path},dtype={dtype}", "--device", "cpu",
        "--tasks", tasks, "--metadata", json.dumps({"dataset_path": str(dataset)}),
        "--limit", str(limit), "--batch_size", str(limit), "--output_path", str(out), *extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout[-2500:])
    return json.loads(next(out.rglob("results_*.json")).read_text())


def test_smollm2_is_a_plain_instruct_model_that_answers():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = need("smollm2-135m-instruct")
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    chat = [{"role": "user", "content": "What is 2+3?"}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert "5" in text, text


def test_smollm2_through_lm_eval_with_the_default_shots(small_dataset, tmp_path):
    path = need("smollm2-135m-instruct")
    report = lm_eval_bf16(path, small_dataset, tmp_path / "out", 8, "--apply_chat_template")
    result = report["results"]["interrupt_bench"]
    assert report["n-shot"]["interrupt_bench"] >= 1  # the task's default demonstrations
    assert result["answer_rate,strict"] > 0.3  # shown the format, it writes closed answers
    assert result["accuracy,flexible"] >= result["accuracy,strict"]


def test_gemma_base_model_answers_in_plain_mode(small_dataset, tmp_path):
    """A pretrained base model, shown one demonstration under its own heading, continues
    each turn with an answer (before the plain format kept sessions apart it wrote nothing
    in any turn), and gets some easy tasks right alone."""
    from local_models.hardware import best_dtype

    path = need("gemma-3-270m")
    assert not (path / "chat_template.jinja").exists()
    report = lm_eval_bf16(path, small_dataset, tmp_path / "out", 8, dtype=best_dtype(),
                          tasks="interrupt_bench,interrupt_bench_easy_controls")  # fmt: skip
    assert report["n-shot"]["interrupt_bench"] >= 1  # plain mode: demonstrations as text
    assert report["results"]["interrupt_bench"]["answer_rate,strict"] >= 0.5
    assert report["results"]["interrupt_bench_easy_controls"]["accuracy_single,strict"] > 0


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_engine_turns_equal_per_request_turns_in_float32(name, small_dataset):
    """On the real models in float32 the session engine (``auto``) and per-request
    ``generate_until`` (``exact``) give every turn the same text and cut."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from .test_engine import _turns
    from .test_lm_eval_policies import TASKS_DIR

    path = need(name)
    lm = HFLM(pretrained=str(path), dtype="float32", device="cpu", batch_size=6)
    chat = models.has_chat_template(path)

    def run(mode):
        meta = {"dataset_path": str(small_dataset), "turn_batching": mode}
        manager = TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata=meta)
        result = simple_evaluate(
            model=lm, tasks=["interrupt_bench"], task_manager=manager, log_samples=True,
            limit=6, apply_chat_template=chat,
        )  # fmt: skip
        return _turns(result)

    auto, exact = run("auto"), run("exact")
    texts = {ep: [outs for outs, _ in sessions] for ep, sessions in auto.items()}
    assert texts == {ep: [outs for outs, _ in sessions] for ep, sessions in exact.items()}
    # The per-request path knows only text, so it derives `cut` by re-encoding it; where a
    # turn's text re-encodes to fewer ids than were generated it calls a budget-cut turn
    # uncut. The engine counts the ids it generated. Any disagreement must be that one.
    turns = disagree = 0
    for ep in auto:
        for (_, a_cut), (e_outs, e_cut) in zip(auto[ep], exact[ep]):
            for out, ac, ec in zip(e_outs, a_cut, e_cut):
                turns += 1
                if ac != ec:
                    disagree += 1
                    assert ac and not ec, (ep, out)
    print(f"{name} float32: {turns} turns, identical text; cut differs on {disagree}")


@pytest.fixture(scope="module")
def easy_full_train(tmp_path_factory):
    """`easy` with the full train split (the demonstrations are picked from it exactly as
    in a full build) and the first 60 validation episodes."""
    from dataset_builder.build import build_dataset
    from interrupt_bench.config import get_config

    out = tmp_path_factory.mktemp("easy") / "interrupt_bench"
    sizes = {"train": 2000, "validation": 60, "test": 1}
    build_dataset(out, [get_config("easy")], sizes=sizes, progress=False)
    return out


def test_smollm2_resumes_cut_tasks_with_the_default_demonstrations(easy_full_train, tmp_path):
    """What the benchmark measures is visible on a 135M model: with the default
    demonstrations (two ``resume_and_close`` sessions) SmolLM2 comes back to some of the
    tasks a cut left open (task README: 5/32 on these 60 episodes, bf16), where the old
    demonstrations gave 0/40."""
    from local_models.hardware import best_dtype

    path = need("smollm2-135m-instruct")
    report = lm_eval_bf16(path, easy_full_train, tmp_path / "out", 60, "--apply_chat_template",
                          dtype=best_dtype(), tasks="interrupt_bench_easy_validation")  # fmt: skip
    result = report["results"]["interrupt_bench_easy_validation"]
    print({k: v for k, v in result.items() if "resumption" in k or "accuracy" in k})
    assert report["n-shot"]["interrupt_bench_easy_validation"] == 2
    assert result["resumption_rate,strict"] > 0


SHIPPED_ADAPTER = ROOT / "training" / "adapters" / "smollm2-135m-instruct-easy"


def test_the_shipped_adapter_loads_through_lm_eval_peft(small_dataset, tmp_path):
    """``training/adapters/smollm2-135m-instruct-easy`` is what a user evaluates with
    ``peft=``: it loads on SmolLM2 through the real CLI and changes what the model writes."""
    path = need("smollm2-135m-instruct")
    assert (SHIPPED_ADAPTER / "adapter_model.safetensors").stat().st_size <= 8 * 1024 * 1024
    outputs = {}
    for name, extra in (("base", ""), ("adapter", f",peft={SHIPPED_ADAPTER}")):
        lm_eval_bf16(f"{path}{extra}", small_dataset, tmp_path / name, 2, "--apply_chat_template",
                     "--log_samples", tasks="interrupt_bench_easy")  # fmt: skip
        lines = samples_file(tmp_path / name, "interrupt_bench_easy").read_text().splitlines()
        outputs[name] = [json.loads(line)["resps"] for line in lines]
    assert outputs["adapter"] and outputs["adapter"] != outputs["base"]
