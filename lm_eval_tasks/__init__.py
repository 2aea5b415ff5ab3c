"""The lm-evaluation-harness front end.

- ``interrupt_bench/``: the task folder lm-eval reads (YAMLs, ``utils.py``, README);
  pass :data:`TASKS_DIR`'s parent as ``--include_path``.
- ``dispatch.py``: the ``interrupt_session`` request type every lm-eval LM gets, which
  replays whole sessions where they play best: on a session backend (``backends.py``:
  the session engine for ``hf``; ``vllm_backend.py``: a ``vllm.LLM``), else through
  ``generate_until`` (``responder.py``). Beside them: ``settings.py`` (a request's
  :class:`~lm_eval_tasks.settings.RunSettings`), ``turns.py`` (a turn's prompt and
  text), ``cache_identity.py`` (``--use_cache`` keyed on the model).
- ``scripted_lm.py``: the reference policies as an lm-eval ``LM`` (``PolicyLM``), which
  checks the whole harness end to end against numbers the core predicts.
- ``figures.py``: plots from ``--log_samples`` output.

The folder ships in the wheel; :func:`include_path` finds it in a checkout or an
installed package alike."""

from __future__ import annotations

from interrupt_bench.templating import package_dir

TASKS_DIR = package_dir("lm_eval_tasks", "interrupt_bench")


def include_path() -> str:
    """The directory to pass to lm-eval as ``--include_path`` / ``TaskManager(include_path=)``."""
    return str(TASKS_DIR.parent)
