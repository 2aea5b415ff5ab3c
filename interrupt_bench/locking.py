"""One writer per directory: a lock file beside the directory, held for the whole run.

A dataset build, a training run and a model fetch each write into one directory; two
processes doing so at once lose each other's work (a config missing from a dataset, a
training log with every step twice). The lock is ``.NAME.lock`` beside ``NAME``, taken
with ``flock`` so the kernel releases it when its holder dies: a lock left by a killed
run is stale the moment its process is gone and the next run takes it over. The file
holds the holder's PID so the refusal can name it."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class DirectoryInUse(RuntimeError):
    """Another live process holds the directory's lock."""


def lock_path(target: Path) -> Path:
    """The lock file of ``target``: ``.NAME.lock`` in the same parent directory."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return f"process {text}" if text.isdigit() else "another process"


@contextmanager
def exclusive(target: Path, what: str, *, wait: bool = False, fix: str = "") -> Iterator[None]:
    """Hold ``target``'s lock for the body. ``wait``: block until the holder finishes
    (saying so once on stderr); otherwise refuse at once with :class:`DirectoryInUse`,
    naming the holder, ``what`` the directory is, and ``fix``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(target)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                advice = f"; {fix}" if fix else ""
                raise DirectoryInUse(
                    f"{what} {target} is in use by {holder} (lock {path}): wait for it to "
                    f"finish{advice}"
                ) from None
            print(f"[lock] {what} {target} is in use by {holder}; waiting", file=sys.stderr)
            began = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_EX)
            print(f"[lock] got {target} after {time.monotonic() - began:.0f} s", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
