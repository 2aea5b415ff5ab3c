"""Built-in task families and the lookup by name. Importing this package registers the
built-ins; a new family is a new module here (or anywhere) that calls
:func:`interrupt_bench.tasks.register_family`."""

from interrupt_bench.errors import ConfigError
from interrupt_bench.families import (
    comparison,
    copying,
    math_ops,
    ordering,
    picking,
    translation,
)
from interrupt_bench.tasks import FAMILIES, Family

__all__ = [
    "comparison",
    "copying",
    "get_family",
    "math_ops",
    "ordering",
    "picking",
    "translation",
]


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise ConfigError(
            f"unknown task family {name!r}; known families: {known}. "
            "Fix the config's `families` list or register the family with "
            "interrupt_bench.tasks.register_family."
        ) from None
