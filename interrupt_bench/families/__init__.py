"""Built-in task families. Importing this package registers them; a new family is a new
module here (or anywhere) that calls :func:`interrupt_bench.tasks.register_family`."""

from interrupt_bench.families import math_ops, ordering, translation

__all__ = ["math_ops", "ordering", "translation"]
