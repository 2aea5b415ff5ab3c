"""The dataset's schema and the one way every front end loads episodes.

``load_episodes`` takes a Hub dataset id or a directory written by
``python -m dataset_builder build``; both give the same rows. Problems come back as a
DatasetError that names the file or field and says how to fix it."""

from __future__ import annotations

import os
from pathlib import Path

from interrupt_bench.episodes import Episode, check_budgets
from interrupt_bench.errors import DatasetError
from interrupt_bench.schema import episode_features

HUB_DATASET_ID = "interrupt-bench/interrupt-bench"
BUILD_HINT = (
    "build it offline with `python -m dataset_builder build --out DIR` and pass that "
    f"directory, or pass a Hub dataset id (default {HUB_DATASET_ID!r})"
)


def check_parquet_files(directory: Path, config: str | None = None) -> None:
    """Open every parquet file's footer and compare its schema with the episode schema,
    so a corrupt or foreign file is named before ``datasets`` fails somewhere deep."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    expected = episode_features().arrow_schema
    pattern = f"{config}/*.parquet" if config else "*/*.parquet"
    for path in sorted(directory.glob(pattern)):
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(
                f"{path} is not a readable parquet file ({exc}); delete the directory and "
                "rebuild with `python -m dataset_builder build --out DIR`"
            ) from None
        if not schema.remove_metadata().equals(expected.remove_metadata()):
            got = {f.name: str(f.type) for f in schema}
            want = {f.name: str(f.type) for f in expected}
            diff = sorted(
                f"{k}: expected {want.get(k, 'absent')}, found {got.get(k, 'absent')}"
                for k in set(got) | set(want)
                if got.get(k) != want.get(k)
            )
            raise DatasetError(
                f"{path} does not have the episode schema ({'; '.join(diff)}); it was "
                "written by another tool or version. Rebuild with "
                "`python -m dataset_builder build --out DIR`"
            )


def load_rows(path: str | os.PathLike, config: str = "default", split: str = "test"):
    """The ``datasets.Dataset`` of one config and split, from a directory or the Hub."""
    import datasets

    source = str(path)
    local = Path(source).expanduser()
    if local.exists():
        if not (local / "README.md").exists() and not any(local.glob("*/*.parquet")):
            raise DatasetError(f"{local} holds no interrupt-bench dataset; {BUILD_HINT}")
        check_parquet_files(local, config)
        source = str(local)
    elif source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise DatasetError(f"dataset directory {source} does not exist; {BUILD_HINT}")
    try:
        return datasets.load_dataset(source, config, split=split)
    except ValueError as exc:
        text = str(exc)
        if "BuilderConfig" in text or ("config" in text.lower() and "not found" in text.lower()):
            raise DatasetError(f"dataset {source} has no config {config!r}: {text}") from None
        if "split" in text.lower():
            raise DatasetError(
                f"dataset {source} config {config!r} has no split {split!r}: {text}"
            ) from None
        raise DatasetError(f"could not load {source} ({config}/{split}): {text}") from None
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise DatasetError(
            f"dataset {source} not found on the Hub or as a local directory ({exc}); {BUILD_HINT}"
        ) from None
    except Exception as exc:  # connection errors offline, corrupt shards, …
        if type(exc).__name__ in (
            "ConnectionError",
            "OfflineModeIsEnabled",
            "LocalEntryNotFoundError",
        ):
            raise DatasetError(
                f"dataset {source} cannot be reached offline; {BUILD_HINT}"
            ) from None
        raise


def load_episodes(
    path: str | os.PathLike, config: str = "default", split: str = "test", limit: int | None = None
) -> list[Episode]:
    """Episodes of one config and split, each row checked (see ``Episode.from_row``)."""
    rows = load_rows(path, config, split)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    episodes = [Episode.from_row(row) for row in rows]
    for episode in episodes:
        check_budgets(episode)
    return episodes
