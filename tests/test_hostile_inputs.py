"""Values that would pass a shallow check and fail later, deep in torch or the model:
each is refused where it enters, naming the field or row."""

from __future__ import annotations

import pytest

from interrupt_bench.config import get_config
from interrupt_bench.episodes import Episode, check_budgets, generate_episode
from interrupt_bench.errors import ConfigError, DatasetError
from interrupt_bench.scoring import score_episode
from training.config import TrainConfig


@pytest.mark.parametrize("field", ["learning_rate", "temperature", "kl_coef", "max_entropy"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_training_values_are_refused_by_name(field, value):
    config = TrainConfig(model_name_or_path="m")
    setattr(config, field, value)
    with pytest.raises(ConfigError, match=rf"`{field}` is {value}; it must be a finite number"):
        config.validate()


def _row(**task_changes):
    row = generate_episode(get_config("default"), "test", 3).to_row()
    row["tasks"][1].update(task_changes)
    return row


@pytest.mark.parametrize("value", [None, "", "   "])
def test_null_or_empty_question_is_a_corrupt_row(value):
    with pytest.raises(DatasetError, match=r"default-test-00003.*task 2 has no question"):
        Episode.from_row(_row(question=value))


def test_absurd_budget_is_a_corrupt_row_not_a_model_failure():
    row = _row()
    row["budgets"][0] = 2147483647
    with pytest.raises(DatasetError, match=r"default-test-00003.*budget above 8192"):
        Episode.from_row(row)
    row["budgets"][0] = 300  # below the maximum, outside default's 0-100
    episode = Episode.from_row(row)
    with pytest.raises(DatasetError, match=r"draws budgets from \[0, 100\].*300"):
        check_budgets(episode)


def test_score_episode_checks_its_arguments():
    episode = generate_episode(get_config("default"), "test", 0)
    outputs = [""] * episode.n_turns
    with pytest.raises(ValueError, match=r"one bool .* per output: 6 outputs"):
        score_episode(episode, outputs, [True, False])
    with pytest.raises(TypeError, match="wrap a single turn in a list"):
        score_episode(episode, "<answer task=1>x</answer>")
    with pytest.raises(TypeError, match="sequence of strings"):
        score_episode(episode, [None] * episode.n_turns)
