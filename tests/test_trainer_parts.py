"""The trainer's library modules without a launch: validation metrics reduced by name
through the core's aggregation, the trainer state a checkpoint carries, checkpoint
rotation, the output_dir refusal, the first-step log-prob check, and ``--resume true``
cutting the logs back to the checkpoint."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from interrupt_bench.errors import ConfigError
from interrupt_bench.scoring import aggregate, score_episode
from training.checkpoints import (
    SetupError,
    check_output_dir,
    checkpoint_dirs,
    resume,
    save_checkpoint,
)
from training.config import TrainConfig
from training.loss import check_logprobs, micro_batches, token_advantages
from training.rewards import RewardWeights, cut_resumed_rate, reward
from training.rollouts import SessionTokens
from training.state import TrainState
from training.validation import episode_record, validation_metrics

from .test_rewards import EPISODE

OUTPUTS = [
    ("<answer task=1>2</answer>", "<answer task=2>4</answer>", ""),
    ("", "<answer task=1>2</answer><answer task=2>5</answer>", ""),
    ("<answer task=1>3</answer>", "", "<answer task=1>2</answer><answer task=2>4</answer>"),
    ("", "", ""),
]
CUTS = [(False, False, False), (True, False, False), (False, True, False), (True, True, True)]
WEIGHTS = RewardWeights(accuracy=1.0, reattempts=0.3, resumption=0.2, cut_resumption=0.5)


def _records(indices):
    rows = []
    for i in indices:
        score = score_episode(EPISODE, list(OUTPUTS[i]), CUTS[i])
        rows.append(episode_record(score, CUTS[i], WEIGHTS))
    return rows


def test_validation_metrics_are_the_cores_aggregate_by_name():
    rows = _records(range(4))
    scores = [r["score"] for r in rows]
    core = aggregate(scores)
    got = validation_metrics(rows)
    assert got["val_accuracy"] == core["accuracy"]
    assert got["val_reattempts"] == core["reattempts"]
    assert got["val_resumption_rate"] == core["resumption_rate"]
    precision = core["reattempt_precision"]  # NaN (nothing re-attempted) is logged as 0
    assert got["val_reattempt_precision"] == (0.0 if math.isnan(precision) else precision)
    n = len(rows)
    want_reward = sum(reward(s, WEIGHTS, c) for s, c in zip(scores, CUTS)) / n
    want_cut = sum(cut_resumed_rate(s, c) for s, c in zip(scores, CUTS)) / n
    right = sum(cut_resumed_rate(s, c, correct_only=True) for s, c in zip(scores, CUTS)) / n
    assert got["val_reward"] == pytest.approx(want_reward, abs=1e-15)
    assert got["val_cut_resumption"] == pytest.approx(want_cut, abs=1e-15)
    assert got["val_cut_resumption_correct"] == pytest.approx(right, abs=1e-15)
    assert list(got) == [
        "val_reward",
        "val_accuracy",
        "val_reattempts",
        "val_resumption_rate",
        "val_reattempt_precision",
        "val_cut_resumption",
        "val_cut_resumption_correct",
    ]


def test_validation_metrics_over_ranks_do_not_depend_on_the_sharding():
    """Two ranks' shards gathered (rank 0's episodes, then rank 1's) give the numbers of
    one rank holding every episode."""
    one = validation_metrics(_records(range(4)))
    two = validation_metrics(_records([0, 2]) + _records([1, 3]))
    assert two == pytest.approx(one, abs=1e-15)


def test_validation_metrics_count_nothing_as_zero():
    """No episode, or no task left open: the log holds 0, never NaN."""
    assert validation_metrics([]) == dict.fromkeys(validation_metrics(_records([0])), 0.0)
    perfect = validation_metrics(_records([0]))
    assert perfect["val_resumption_rate"] == 0.0
    assert not any(math.isnan(v) for v in perfect.values())


def test_trainer_state_round_trips_through_trainer_state_json():
    state = TrainState(step=3, data_pos=12, running_mean=0.25, best_val=0.5, collapse=None)
    text = json.dumps(asdict(state), indent=2)
    assert list(json.loads(text)) == ["step", "data_pos", "running_mean", "best_val", "collapse"]
    assert TrainState.from_json(text) == state
    with pytest.raises(ValueError):
        TrainState.from_json(json.dumps({**asdict(state), "extra": 1}))
    with pytest.raises(ValueError):
        TrainState.from_json("[1, 2]")


class _Accelerator:
    """The part of accelerate's Accelerator that save_checkpoint uses, on one process."""

    is_main_process = True

    def save_state(self, where: str) -> None:
        Path(where).mkdir(parents=True)
        (Path(where) / "model.safetensors").write_text("weights")

    def wait_for_everyone(self) -> None:
        pass


def test_checkpoints_are_renamed_into_place_and_rotated(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(_Accelerator(), tmp_path, TrainState(step=step), limit=2)
    kept = checkpoint_dirs(tmp_path)
    assert [c.name for c in kept] == ["step-0000002", "step-0000003"]
    assert not list((tmp_path / "checkpoints").glob("*.partial"))
    assert TrainState.from_json((kept[-1] / "trainer_state.json").read_text()).step == 3


def test_a_fresh_run_into_a_used_output_dir_is_refused(tmp_path):
    cfg = TrainConfig(model_name_or_path="m", output_dir=str(tmp_path))
    (tmp_path / "train_config.json").write_text(json.dumps(asdict(cfg)))
    with pytest.raises(SetupError, match="holds another training run"):
        check_output_dir(cfg, tmp_path)
    cfg.overwrite_output_dir = True
    check_output_dir(cfg, tmp_path)
    assert not (tmp_path / "train_config.json").exists()


def test_micro_batches_cover_every_session_in_order():
    assert micro_batches(5, 2) == [[0, 1], [2, 3], [4]]
    assert micro_batches(3, 8) == [[0, 1, 2]]


def test_token_advantages_add_each_turns_credit_on_that_turns_tokens_only():
    # ids: template, turn 1 (2 ids), template, turn 2 (1 id), template
    s = SessionTokens(
        ids=[0] * 7,
        sampled=[False, True, True, False, True, False, False],
        logprobs=[0.0] * 7,
        turn=[0, 1, 1, 0, 2, 0, 0],
    )
    out = token_advantages([s, s], [1, 0], [0.5, -1.0], [[0.0, 2.0], [3.0, 0.0]], 8, "cpu")
    assert out.tolist() == [
        [-1.0, 2.0, 2.0, -1.0, -1.0, -1.0, -1.0, -1.0],
        [0.5, 0.5, 0.5, 0.5, 2.5, 0.5, 0.5, 0.5],
    ]
    plain = token_advantages([s], [0], [0.5], None, 7, "cpu")
    assert plain.tolist() == [[0.5] * 7]


def test_logprob_check_logs_its_figures_and_stops_a_misaligned_loss():
    lines: list[str] = []
    check_logprobs(torch.full((10,), 1e-5), "exact", lines.append)
    assert lines[-1].startswith("first-step check over 10 sampled tokens") and ": ok" in lines[-1]
    with pytest.raises(RuntimeError, match="would train on other tokens"):
        check_logprobs(torch.full((10,), 1.3), "bf16", lines.append)
    assert lines[-1].endswith("MISMATCH")


# --- --resume true: the logs cut back to the checkpoint ----------------------------------


class _ResumingAccelerator(_Accelerator):
    def load_state(self, where: str) -> None:
        assert (Path(where) / "model.safetensors").exists()


def _killed_run(tmp_path: Path, train_log: str, samples: str) -> SimpleNamespace:
    """A run as `--max_steps 4 --save_every 2 --sample_every 1` leaves it when killed after
    step 4's samples and before its checkpoint: checkpoints 1 and 2 (save_total_limit 2),
    steps 0-4 in train_log.jsonl (0: the starting policy's validation), 1-4 in samples."""
    for step in (1, 2):
        save_checkpoint(_Accelerator(), tmp_path, TrainState(step=step), limit=2)
    (tmp_path / "train_log.jsonl").write_text(train_log)
    (tmp_path / "samples.jsonl").write_text(samples)
    said: list[str] = []
    return SimpleNamespace(
        output_dir=tmp_path,
        accelerator=_ResumingAccelerator(),
        log_path=tmp_path / "train_log.jsonl",
        log=said.append,
        said=said,
    )


def _lines(steps, **extra) -> str:
    return "".join(json.dumps({"step": s, "reward": 0.5, **extra}) + "\n" for s in steps)


def _steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_resume_cuts_samples_back_to_the_checkpoint_like_the_train_log(tmp_path):
    """Both logs end at the checkpoint's step, so the steps taken again appear once."""
    run = _killed_run(tmp_path, _lines(range(5)), _lines(range(1, 5), outputs=["x"]))
    assert resume(run).step == 2
    assert _steps(tmp_path / "train_log.jsonl") == [0, 1, 2]
    assert _steps(tmp_path / "samples.jsonl") == [1, 2]


def test_resume_drops_a_cut_off_last_log_line_with_a_warning_naming_the_file(tmp_path):
    """A torn write (a kill or a full disk mid-line) leaves half a record at the end."""
    torn = _lines(range(4)) + '{"step": 4, "rew'
    run = _killed_run(tmp_path, torn, _lines(range(1, 5))[:-10])
    check_output_dir(TrainConfig(model_name_or_path="m", resume=True), tmp_path)
    assert resume(run).step == 2
    assert _steps(tmp_path / "train_log.jsonl") == [0, 1, 2]
    assert _steps(tmp_path / "samples.jsonl") == [1, 2]
    warnings = [line for line in run.said if "cut-off line" in line]
    assert len(warnings) == 2, run.said
    assert str(tmp_path / "train_log.jsonl") in warnings[0]
    assert str(tmp_path / "samples.jsonl") in warnings[1]


@pytest.mark.parametrize("bad", ['{"step": 2, "rew', "[1, 2]", '{"reward": 0.5}', "\x00\x00"])
@pytest.mark.parametrize("log", ["train_log.jsonl", "samples.jsonl"])
def test_resume_refuses_a_bad_log_line_in_the_middle_naming_file_and_line(tmp_path, bad, log):
    """Not a torn tail: refused, naming file and line, before the model loads (the output
    dir check) and with nothing changed."""
    logs = {"train_log.jsonl": _lines(range(5)), "samples.jsonl": _lines(range(1, 5))}
    lines = logs[log].splitlines(keepends=True)
    logs[log] = "".join([*lines[:2], bad + "\n", *lines[2:]])
    run = _killed_run(tmp_path, logs["train_log.jsonl"], logs["samples.jsonl"])
    where = re.escape(str(tmp_path / log))
    message = rf"{where} line 3 is not a step's JSON record .*Nothing was changed\.$"
    with pytest.raises(SetupError, match=message):
        check_output_dir(TrainConfig(model_name_or_path="m", resume=True), tmp_path)
    with pytest.raises(SetupError, match=message):
        resume(run)
    assert (tmp_path / "train_log.jsonl").read_text() == logs["train_log.jsonl"]
    assert (tmp_path / "samples.jsonl").read_text() == logs["samples.jsonl"]


@pytest.mark.parametrize(
    ("flags", "launched", "expected"),
    [
        ("fpu sse2 avx2 avx512f avx512_bf16", None, "bf16"),  # AMD EPYC with AVX512-BF16
        ("fpu sse2 avx2 amx_bf16 amx_tile", None, "bf16"),  # Intel Xeon with AMX
        ("fpu sse2 avx2 fma", None, "no"),  # AVX2 only: bf16 would be emulated
        ("fpu sse2 avx2 fma", "bf16", "bf16"),  # accelerate launch --mixed_precision wins
        ("fpu sse2 avx2 avx512_bf16", "no", "bf16"),  # "no" from accelerate is no choice
    ],
)
def test_training_autocast_follows_the_cpus_native_bf16(monkeypatch, flags, launched, expected):
    """``mixed_precision: auto`` (the default) picks bf16 exactly where the evaluation picks
    bfloat16: on a CPU that multiplies it natively; accelerate's own choice wins."""
    from local_models import hardware
    from training.reinforce import mixed_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "_cpuinfo", lambda field: flags if field == "flags" else "")
    if launched is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launched)
    assert mixed_precision("auto") == expected
    assert hardware.best_dtype() == ("bfloat16" if "bf16" in flags else "float32")
    assert mixed_precision("fp16") == "fp16"  # an explicit setting is kept as given


def test_open_one_turn_sets_one_question_budget_to_zero_the_same_way_every_time():
    from dataclasses import replace

    from interrupt_bench.session import SILENT
    from training.run_setup import open_one_turn

    episodes = [replace(EPISODE, episode_id=f"e{i}", budgets=(7, 8)) for i in range(40)]
    opened = [open_one_turn(e, seed=0) for e in episodes]
    for before, after in zip(episodes, opened):
        zeroed = [i for i, b in enumerate(after.budgets) if b == 0]
        assert len(zeroed) == 1
        assert [b for i, b in enumerate(after.budgets) if i != zeroed[0]] == [
            b for i, b in enumerate(before.budgets) if i != zeroed[0]
        ]
        assert (after.closing_budget, after.tasks) == (before.closing_budget, before.tasks)
    assert opened == [open_one_turn(e, seed=0) for e in episodes]  # same seed, same turns
    assert {a.budgets.index(0) for a in opened} == {0, 1}  # each turn gets drawn
    assert opened != [open_one_turn(e, seed=1) for e in episodes]
    assert SILENT.cut and SILENT.text == ""  # a budget-0 turn: cut before anything is written


def test_tag_credit_needs_samples_to_compare():
    with pytest.raises(ConfigError, match=r"compares samples of one episode.*baseline none"):
        TrainConfig(
            model_name_or_path="m", tag_credit=1.0, samples_per_episode=1, baseline="none"
        ).validate()
    TrainConfig(model_name_or_path="m", tag_credit=1.0, samples_per_episode=2).validate()
    TrainConfig(
        model_name_or_path="m",
        tag_credit=1.0,
        tag_credit_baseline="none",
        samples_per_episode=1,
        baseline="none",
    ).validate()


def test_init_adapter_starts_from_an_adapters_weights_and_refuses_another_shape(
    tiny_model, tmp_path
):
    """``--init_adapter DIR`` loads a saved adapter's LoRA weights in place of fresh ones
    (the same tensors, not the seed's draw); another rank, or a folder with no adapter,
    is a ConfigError naming the flag to change."""
    from training.policy import load_model

    cfg = TrainConfig(model_name_or_path=str(tiny_model), lora_target_modules=["q_proj"])
    _, trained = load_model(cfg)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora_B" in name:
                p.fill_(0.25)  # fresh B is all zeros: these are not the seed's
    trained.save_pretrained(tmp_path / "adapter")

    _, model = load_model(replace(cfg, init_adapter=str(tmp_path / "adapter")))
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(bool((p == 0.25).all()) for p in lora_b)
    assert all(p.requires_grad for p in lora_b)  # trainable, not a frozen adapter

    with pytest.raises(ConfigError, match="set --lora_r to the adapter's"):
        load_model(replace(cfg, lora_r=8, init_adapter=str(tmp_path / "adapter")))
    with pytest.raises(ConfigError, match=r"no adapter_config\.json"):
        load_model(replace(cfg, init_adapter=str(tmp_path)))
