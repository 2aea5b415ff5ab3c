"""Directories built beside their destination and renamed into place in one step.

The dataset builder and the model cache both write into a hidden sibling
``.NAME.partial-PID-xxxx`` and ``os.replace`` it onto ``NAME`` only when complete, so a
failure never leaves half a dataset or half a model. The PID in the name lets the next
run remove what a killed run left behind without touching a run still in progress."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def clean_leftovers(parent: Path, name: str, kinds: tuple[str, ...] = ("partial",)) -> None:
    """Remove ``.NAME.KIND-PID-*`` siblings whose process is gone (or that carry no PID)."""
    for kind in kinds:
        prefix = f".{name}.{kind}-"
        for leftover in parent.glob(prefix + "*"):
            pid = leftover.name[len(prefix) :].split("-")[0]
            if not pid.isdigit() or not _alive(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)


def umask_modes(path: Path, children: bool = False) -> None:
    """The usual umask-derived modes: ``mkdtemp`` makes 0o700 directories and some writers
    0o600 files, and a dataset or model cache is for other users to read too."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)
    for child in path.iterdir() if children else ():
        os.chmod(child, (0o777 if child.is_dir() else 0o666) & ~umask)


def staging_dir(final: Path, kinds: tuple[str, ...] = ("partial",)) -> Path:
    """A fresh ``.FINAL.partial-PID-xxxx`` beside ``final``, after removing dead runs'
    leftovers of the given kinds."""
    clean_leftovers(final.parent, final.name, kinds)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-{os.getpid()}-", dir=final.parent))
    umask_modes(tmp)
    return tmp
