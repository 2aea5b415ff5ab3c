"""Errors a user can act on: every message names the problem and the fix."""


class InterruptBenchError(Exception):
    """Base class: a problem with the user's input, never a bug in the library."""


class ConfigError(InterruptBenchError, ValueError):
    """A benchmark config value is out of range or unknown."""


class DatasetError(InterruptBenchError):
    """A dataset is missing, corrupt or does not have the episode schema."""
