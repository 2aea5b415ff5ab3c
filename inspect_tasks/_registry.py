"""The ``inspect_ai`` entry point (named ``interrupt_bench``): importing it registers
every task, so ``inspect eval interrupt_bench/TASK`` finds them."""

from inspect_tasks.tasks import TASKS  # noqa: F401
