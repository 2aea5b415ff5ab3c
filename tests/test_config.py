import pytest

from interrupt_bench.config import (
    CONFIGS,
    EASY_FAMILIES,
    EASY_GRID_TASKS,
    GRID_INTERVALS,
    GRID_TASKS,
    EpisodeConfig,
    get_config,
)
from interrupt_bench.errors import ConfigError


def test_shipped_configs():
    default = get_config("default")
    assert (default.n_tasks, default.budget_lo, default.budget_hi, default.closing_budget) == (
        5,
        0,
        100,
        100,
    )
    grid = (len(GRID_TASKS) + len(EASY_GRID_TASKS)) * len(GRID_INTERVALS)
    assert len(CONFIGS) == 2 + grid >= 14
    easy = get_config("easy")
    shape = ("n_tasks", "budget_lo", "budget_hi", "closing_budget", "difficulty", "split_sizes")
    assert all(getattr(easy, f) == getattr(default, f) for f in shape)  # the default's shape
    assert easy.families == EASY_FAMILIES != default.families
    for lo, hi in GRID_INTERVALS:
        config = get_config(f"easy_tasks5_budget{lo}to{hi}")
        assert (config.n_tasks, config.budget_lo, config.budget_hi) == (5, lo, hi)
        assert config.families == EASY_FAMILIES


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"budget_lo": 50, "budget_hi": 10}, "inverted"),
        ({"budget_lo": -1}, "negative"),
        ({"n_tasks": 0}, "at least 1 task"),
        ({"closing_budget": -5}, "closing_budget"),
        ({"families": ("math", "poetry")}, "unknown task family 'poetry'"),
        ({"families": ()}, "families"),
        ({"difficulty": 7}, "difficulty"),
        ({"n_tasks": "5"}, "must be an integer"),
        ({"name": "bad name"}, "name"),
        ({"split_sizes": {"dev": 3}}, "unknown split"),
    ],
)
def test_bad_config_values_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        EpisodeConfig(**{"name": "x", **changes})


def test_unknown_config_lists_the_known_ones():
    with pytest.raises(ConfigError, match="shipped configs: default"):
        get_config("nope")
