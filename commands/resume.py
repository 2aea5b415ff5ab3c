"""``--resume``: what defines one row of a table (the model as run, the task, the dataset's
build record, the episode limit), and which rows of an earlier run's JSON may be kept."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from commands.model_spec import ModelSpec


def _dataset_stamp(dataset: Path) -> dict:
    """Which dataset a row was computed on: its directory and its build record (configs,
    seed, counts), so a rebuilt dataset does not reuse the old dataset's rows."""
    info = dataset / "build_info.json"
    digest = hashlib.sha256(info.read_bytes()).hexdigest()[:16] if info.is_file() else None
    return {"path": str(dataset.resolve()), "build_info": digest}


def row_identity(spec: ModelSpec, task: str, dataset: Path, limit: int | None) -> dict:
    """What defines one row of a table: the model as run, the task, the dataset and the
    episode limit. ``--resume`` reuses a saved row only when all of it matches."""
    return {**spec.identity(), "task": task, "dataset": _dataset_stamp(dataset), "limit": limit}


def resumable(saved: Path, rows: dict[str, dict], samples_of, resume: bool) -> dict[str, dict]:
    """The rows of ``saved`` that ``--resume`` may keep: those whose recorded identity
    (model as run, task, dataset, limit) equals the one asked for now and whose samples
    file is still there. A row from another limit, dtype, adapter or dataset is run again,
    never shown under this run's title."""
    if not (resume and saved.exists()):
        return {}
    try:
        old = json.loads(saved.read_text())
    except (OSError, ValueError):
        return {}  # a file cut short by a kill: nothing in it is trusted
    if not isinstance(old, dict):
        return {}
    return {key: value for key, value in old.items()
            if key in rows and isinstance(value, dict) and value.get("row") == rows[key]
            and samples_of(key).exists()}  # fmt: skip
