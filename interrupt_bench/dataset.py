"""The dataset's schema and the one way every front end loads episodes.

``load_episodes`` takes a Hub dataset id or a directory written by
``python -m dataset_builder build``; both give the same rows. Problems come back as a
DatasetError that names the file or field and says how to fix it.

A local directory is loaded only when the builder wrote it (its card ``README.md`` and
``build_info.json`` both there and well-formed): without the card's ``configs:`` block,
``datasets`` reads every config's shards as one, and the benchmark would score a
mixture. Each row is then checked against the config and split asked for
(:func:`check_rows`), the last guard against rows of another config slipping in."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from interrupt_bench.config import CONFIGS, SPLITS, EpisodeConfig
from interrupt_bench.episodes import Episode, check_budgets
from interrupt_bench.errors import ConfigError, DatasetError
from interrupt_bench.schema import episode_features

HUB_DATASET_ID = "interrupt-bench/interrupt-bench"
BUILD_HINT = (
    "build it offline with `python -m dataset_builder build --out DIR` and pass that "
    f"directory, or pass a Hub dataset id (default {HUB_DATASET_ID!r})"
)
BUILD_INFO = "build_info.json"
CARD = "README.md"


def read_build_info(directory: Path, fix: str = "") -> dict[str, Any] | None:
    """``directory``'s ``build_info.json`` (None when absent), checked to have the shape
    the builder writes, so a hand-edited one is named here rather than failing as a
    ``KeyError`` or ``AttributeError`` somewhere later. ``fix`` replaces the advice."""
    path = Path(directory) / BUILD_INFO
    if not path.exists():
        return None
    fix = fix or (
        f"restore it, or rebuild the directory with `python -m dataset_builder build --out "
        f"{directory} --replace`"
    )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not JSON ({exc}); {fix}") from None
    problem = _build_info_problem(info)
    if problem:
        raise DatasetError(f"{path} is not a build record the builder writes ({problem}); {fix}")
    return info


def _build_info_problem(info: Any) -> str:
    """What is wrong with a parsed ``build_info.json`` ("" when nothing is)."""
    if not isinstance(info, dict):
        return f"expected an object, found {type(info).__name__}"
    seed = info.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        return f"`seed` must be an integer, found {seed!r}"
    if not isinstance(info.get("generator_version"), str):
        return f"`generator_version` must be a string, found {info.get('generator_version')!r}"
    configs, files = info.get("configs"), info.get("files")
    if not isinstance(configs, dict):
        return f"`configs` must be an object of config name -> description, found {configs!r}"
    for name, entry in configs.items():
        counts = entry.get("counts") if isinstance(entry, dict) else None
        if not isinstance(counts, dict) or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in counts.values()
        ):
            return f"`configs.{name}.counts` must be an object of split -> episode count"
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and "/" in k and isinstance(v, str) for k, v in files.items()
    ):
        return "`files` must be an object of CONFIG/FILE -> sha256"
    return ""


def described_config(name: str, info: Mapping[str, Any] | None) -> EpisodeConfig | None:
    """The config ``name``: a shipped one, else as the build described it in
    ``build_info.json`` (None when neither knows it)."""
    if name in CONFIGS:
        return CONFIGS[name]
    entry = (info or {}).get("configs", {}).get(name)
    if not isinstance(entry, dict):
        return None
    fields = {k: v for k, v in entry.items() if k not in ("counts", "split_sizes")}
    try:
        return EpisodeConfig(**{**fields, "families": tuple(fields.get("families", ()))})
    except (TypeError, ConfigError) as exc:
        raise DatasetError(
            f"{BUILD_INFO} describes config {name!r} as {entry!r}, which is not a valid "
            f"config ({exc}); rebuild it with `python -m dataset_builder build --out DIR`"
        ) from None


def read_card_configs(directory: Path, fix: str) -> list[str]:
    """The config names the card's YAML front matter lists under ``configs:``; a card
    whose YAML is broken is named with the line ``yaml`` found wrong."""
    import yaml

    path = Path(directory) / CARD
    text = path.read_text(encoding="utf-8", errors="replace")
    parts = text.split("---", 2) if text.startswith("---") else []
    if len(parts) < 3:
        raise DatasetError(f"{path} has no YAML front matter (between --- lines); {fix}")
    try:
        header = yaml.safe_load(parts[1])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise DatasetError(f"{path} has broken YAML{where} ({problem}); {fix}") from None
    entries = header.get("configs") if isinstance(header, dict) else None
    if not isinstance(entries, list):
        raise DatasetError(f"{path} has no `configs:` list in its YAML front matter; {fix}")
    return [str(e.get("config_name")) for e in entries if isinstance(e, dict)]


def rebuild_command(directory: Path, info: Mapping[str, Any], config: str) -> str:
    """The build command that writes ``config`` of ``directory`` again, row for row (same
    seed, same split sizes) and with it the card of the whole directory."""
    counts = (info.get("configs", {}).get(config) or {}).get("counts") or {}
    sizes = " ".join(f"--split {s} --num-{s} {counts[s]}" for s in SPLITS if s in counts)
    return (
        f"`python -m dataset_builder build --out {directory} --seed {info.get('seed')} "
        f"--config {config}{' ' + sizes if sizes else ''}`"
    )


def check_builder_directory(directory: Path, config: str) -> dict[str, Any]:
    """Refuse a local directory the builder did not write, or whose card or build record
    was broken by hand, before ``datasets`` reads it; return its build record."""
    missing = [name for name in (CARD, BUILD_INFO) if not (directory / name).is_file()]
    if len(missing) == 2 and not any(directory.glob("*/*.parquet")):
        raise DatasetError(f"{directory} holds no interrupt-bench dataset; {BUILD_HINT}")
    if missing == [CARD]:  # the builder's directory, its card removed: rewrite the card
        info = read_build_info(directory) or {}
        raise DatasetError(
            f"{directory} has no dataset card {CARD}, and without its `configs:` block every "
            "config's files load as one; rebuilding a config there rewrites the card: "
            f"{rebuild_command(directory, info, config)}"
        )
    if missing:
        raise DatasetError(
            f"{directory} was not written by the dataset builder (it has no "
            f"{' and no '.join(missing)}), and without the builder's record its configs "
            "cannot be told apart; build a fresh one with `python -m dataset_builder build "
            "--out NEW_DIR` and pass that directory"
        )
    info = read_build_info(directory)
    assert info is not None
    rebuild = "rebuilding a config there rewrites the card for the whole directory: " + (
        rebuild_command(directory, info, config if config in info["configs"] else "NAME")
    )
    listed = read_card_configs(directory, rebuild)
    if config not in listed:
        have = ", ".join(listed) or "none"
        raise DatasetError(
            f"dataset {directory} has no config {config!r} (its card lists: {have}); build it "
            f"with `python -m dataset_builder build --out {directory} --seed {info['seed']} "
            f"--config {config}`"
        )
    return info


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
        if not local.is_dir():
            raise DatasetError(f"{local} is a file, not a dataset directory; {BUILD_HINT}")
        check_builder_directory(local, config)
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


def hub_build_info(source: str) -> dict[str, Any] | None:
    """The ``build_info.json`` of a dataset: read from a local directory, downloaded
    from a Hub dataset repo (None when it has none or the Hub cannot be reached)."""
    local = Path(source).expanduser()
    if local.is_dir():
        return read_build_info(local)
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(source, BUILD_INFO, repo_type="dataset")
    except Exception:  # offline, no such file, no such repo: the config stays undescribed
        return None
    return read_build_info(Path(path).parent)


# Text a question must not hold: rendered into a prompt (``<question task=N>...</question>``
# in a user turn; in plain mode a ``User:``/``Assistant:`` transcript under headings), it
# would end the question early or start a turn the row wrote itself, e.g. a forged
# ``Assistant:`` reply the model then takes for its own. No generated question holds any.
FORGERIES = (
    (re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]"), "a new line of the transcript"),
    (re.compile(r"<\s*/?\s*question\b", re.IGNORECASE), "a question tag"),
    (re.compile(r"\b(?:user|assistant|system)\s*:", re.IGNORECASE), "a turn of the transcript"),
    (
        re.compile(r"\b(?:the\s+real\s+session|example(?:\s+session)?\s+\d+\s*:)", re.IGNORECASE),
        "a heading of the transcript",
    ),
)


def forged_turn(question: str) -> tuple[str, str] | None:
    """The first text in ``question`` that would forge prompt structure (see
    :data:`FORGERIES`), with some of the text around it, and what a prompt would read it
    as; None for an ordinary question."""
    found = [(m, what) for pattern, what in FORGERIES if (m := pattern.search(question))]
    if not found:
        return None
    match, what = min(found, key=lambda f: f[0].start())
    return question[max(0, match.start() - 20) : match.end() + 30], what


def check_rows(
    rows: Iterable[Mapping[str, Any]], source: str, config: str, split: str
) -> list[Episode]:
    """Every row as an Episode, each checked (``Episode.from_row``), all of the config
    and split asked for, within that config's budgets and families, with no episode id
    twice and no question that forges prompt structure (:func:`forged_turn`): rows that
    would change the scores silently are refused here, naming the row."""
    described: EpisodeConfig | None = CONFIGS.get(config)
    if described is None:
        described = described_config(config, hub_build_info(source))
    fix = f"rebuild it with `python -m dataset_builder build --out DIR --config {config}`"
    episodes: list[Episode] = []
    seen: set[str] = set()
    for row in rows:
        episode = Episode.from_row(row)
        where = f"episode row {episode.episode_id!r} of {source} ({config}/{split})"
        if episode.config != config or episode.split != split:
            raise DatasetError(
                f"{where} belongs to {episode.config}/{episode.split}: the dataset mixes "
                f"configs or splits, and its scores would be of that mixture; {fix}"
            )
        if episode.episode_id in seen:
            raise DatasetError(
                f"{where} appears twice: an episode counted twice weighs double in every "
                f"mean; {fix}"
            )
        seen.add(episode.episode_id)
        check_budgets(episode, described)
        for task_id, task in enumerate(episode.tasks, start=1):
            if forged := forged_turn(task.question):
                text, what = forged
                raise DatasetError(
                    f"{where}: task {task_id}'s question holds {text!r}, which a prompt "
                    f"would read as {what}, not as question text; no generated question "
                    f"holds one; {fix}"
                )
        episodes.append(episode)
    return episodes


def load_episodes(
    path: str | os.PathLike, config: str = "default", split: str = "test", limit: int | None = None
) -> list[Episode]:
    """Episodes of one config and split, each row checked (see :func:`check_rows`)."""
    rows = load_rows(path, config, split)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    return check_rows(rows, str(path), config, split)
