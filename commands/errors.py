"""The one error a command refuses its arguments with."""

from __future__ import annotations

from interrupt_bench.errors import InterruptBenchError


class UsageError(InterruptBenchError):
    """A command-line value that cannot run: refused with the fix before the dataset build
    or any model load, so a typo costs a second, not minutes and a traceback."""
