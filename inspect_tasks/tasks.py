"""The registered Inspect tasks: the lm-eval pack's tasks under the same names.

``interrupt_bench`` (the benchmark), ``interrupt_bench_easy``, one task per Table 1
config (``interrupt_bench_tasks5_budget0to50``, ...), the controls
(``interrupt_bench_control_nocut``, ``interrupt_bench_control_single``) and the paired
controls of every config (``interrupt_bench_controls``, ``interrupt_bench_easy_controls``,
``interrupt_bench_{config}_controls``). Every task takes the lm-eval task's metadata as
task parameters: ``-T dataset_path=DIR -T config=NAME -T num_fewshot=K``, plus
``condition``, ``budget_cap``, ``split``, ``filter`` (``strict`` or ``flexible``) and
``fewshot_rule`` (which demonstrations: ``interrupt_bench.demonstrations.RULES``).

Inspect names a task of an installed package ``PACKAGE/TASK`` after the top-level module
that defines it, and finds the package through the ``inspect_ai`` entry point of that
name. The tasks are built here but named for the benchmark's own package
(``interrupt_bench/interrupt_bench``, the distribution's name too, which is how Inspect
also recognises an editable install); the core itself imports no Inspect."""

from __future__ import annotations

from collections.abc import Callable

from inspect_ai import Task, task
from inspect_ai._util.registry import registry_name

from inspect_tasks.dataset import InputError, episode_dataset
from inspect_tasks.scorer import interrupt_bench_scorer, task_metrics
from inspect_tasks.solver import interrupt_session
from interrupt_bench import demonstrations
from interrupt_bench.config import EASY_GRID_TASKS, GRID_INTERVALS, GRID_TASKS, grid_config_name
from interrupt_bench.controls import CONDITIONS, CONTROL_BUDGET, PAIRED, check_budget_cap
from interrupt_bench.demonstrations import DEFAULT_SHOTS
from interrupt_bench.errors import ConfigError
from interrupt_bench.scoring import FILTERS, TASK_VERSION

NAMESPACE = "interrupt_bench"  # the entry point's name and the prefix of every task


def interrupt_bench_task(
    dataset_path: str | None = None,
    config: str = "default",
    num_fewshot: int = DEFAULT_SHOTS,
    condition: str = "interrupted",
    split: str = "test",
    budget_cap: int = CONTROL_BUDGET,
    filter: str = FILTERS[0],
    fewshot_rule: str = demonstrations.DEFAULT_RULE,
) -> Task:
    """One Inspect task over ``split`` of ``config``: a sample per episode, played under
    ``condition`` (``paired``: the controls' three conditions) and scored as lm-eval
    scores it."""
    if condition not in (*CONDITIONS, PAIRED):
        raise InputError(
            f"interrupt_bench: unknown -T condition={condition!r}; use one of "
            f"{', '.join((*CONDITIONS, PAIRED))}"
        )
    if filter not in FILTERS:
        raise InputError(
            f"interrupt_bench: unknown -T filter={filter!r}; use {' or '.join(FILTERS)}"
        )
    if not isinstance(num_fewshot, int) or isinstance(num_fewshot, bool) or num_fewshot < 0:
        raise InputError(
            f"interrupt_bench: -T num_fewshot={num_fewshot!r}; use a whole number >= 0"
        )
    try:
        budget_cap = check_budget_cap(budget_cap, "-T budget_cap")
        demonstrations.check_rule(fewshot_rule)
    except ConfigError as err:
        raise InputError(f"interrupt_bench: {err}") from None
    dataset = episode_dataset(dataset_path, config, split)
    return Task(
        dataset=dataset,
        solver=interrupt_session(
            dataset_path, config, num_fewshot, condition, budget_cap, fewshot_rule
        ),
        scorer=interrupt_bench_scorer(flexible=filter == FILTERS[1]),
        metrics=task_metrics(config, paired=condition == PAIRED),
        fail_on_error=True,
        version=TASK_VERSION,
        metadata={
            "config": config,
            "condition": condition,
            "num_fewshot": num_fewshot,
            "fewshot_rule": fewshot_rule,
        },
    )


def _register(name: str, config: str, condition: str) -> Callable[..., Task]:
    """Register ``NAMESPACE/name``: :func:`interrupt_bench_task` with these defaults."""

    def factory(
        dataset_path: str | None = None,
        config: str = config,
        num_fewshot: int = DEFAULT_SHOTS,
        condition: str = condition,
        split: str = "test",
        budget_cap: int = CONTROL_BUDGET,
        filter: str = FILTERS[0],
        fewshot_rule: str = demonstrations.DEFAULT_RULE,
    ) -> Task:
        return interrupt_bench_task(
            dataset_path, config, num_fewshot, condition, split, budget_cap, filter, fewshot_rule
        )

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"interrupt-bench {name}: config {config}, condition {condition}."
    # Inspect prefixes a task's name with the package of its module when it sees that
    # package installed (in site-packages, or editable by the distribution's name); it
    # misses an editable install when a stale ``*.egg-info`` sits on ``sys.path`` (the
    # checkout as the working directory). Named for the benchmark's package, the task
    # gets ``interrupt_bench/`` either from Inspect or, where Inspect sees no package,
    # from here.
    factory.__module__ = NAMESPACE
    if not registry_name(factory, name).startswith(f"{NAMESPACE}/"):
        name = f"{NAMESPACE}/{name}"
    return task(name=name)(factory)


def _grid(tier: str, sizes: tuple[int, ...]) -> list[str]:
    return [grid_config_name(n, lo, hi, tier) for n in sizes for lo, hi in GRID_INTERVALS]


def task_table() -> dict[str, tuple[str, str]]:
    """Task name -> (config, condition), as the lm-eval pack names its tasks."""
    table = {
        "interrupt_bench": ("default", "interrupted"),
        "interrupt_bench_easy": ("easy", "interrupted"),
    }
    grid = _grid("", GRID_TASKS) + _grid("easy", EASY_GRID_TASKS)
    table |= {f"interrupt_bench_{c}": (c, "interrupted") for c in grid}
    table |= {f"interrupt_bench_control_{c}": ("default", c) for c in CONDITIONS[1:]}
    table["interrupt_bench_controls"] = ("default", PAIRED)
    table["interrupt_bench_easy_controls"] = ("easy", PAIRED)
    table |= {f"interrupt_bench_{c}_controls": (c, PAIRED) for c in grid}
    return table


TASKS: dict[str, Callable[..., Task]] = {
    name: _register(name, config, condition) for name, (config, condition) in task_table().items()
}
