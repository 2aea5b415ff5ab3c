"""Write every (config, split) as parquet shards plus a dataset card, atomically.

Output goes to a temporary sibling directory that replaces ``out`` only once complete,
so a failed or interrupted build never leaves a half-written dataset behind. A build of
some configs or splits into an existing builder directory updates only those and keeps
everything else there (other configs and splits, the user's own files); the card and
``build_info.json`` describe the whole directory. ``replace=True`` starts from empty."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from dataset_builder.card import render_dataset_card
from interrupt_bench.config import SPLITS, EpisodeConfig
from interrupt_bench.dataset import BUILD_INFO, described_config, read_build_info
from interrupt_bench.episodes import DEFAULT_SEED, GENERATOR_VERSION, generate_split
from interrupt_bench.errors import DatasetError, InterruptBenchError
from interrupt_bench.locking import exclusive
from interrupt_bench.schema import episode_features
from interrupt_bench.staging import staging_dir

DEFAULT_SHARD_ROWS = 10_000


class BuildError(InterruptBenchError):
    """The output location cannot be used."""


@dataclass
class BuildReport:
    out: Path
    seed: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # config -> split -> rows
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    seconds: float = 0.0

    @property
    def episodes(self) -> int:
        return sum(n for splits in self.counts.values() for n in splits.values())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_split(rows: list[dict], directory: Path, split: str, shard_rows: int) -> list[Path]:
    """Shards named ``{split}-{i:05d}-of-{n:05d}.parquet``, the Hub's convention."""
    schema = episode_features().arrow_schema
    n_shards = max(1, -(-len(rows) // shard_rows))
    paths = []
    for i in range(n_shards):
        table = pa.Table.from_pylist(rows[i * shard_rows : (i + 1) * shard_rows], schema=schema)
        path = directory / f"{split}-{i:05d}-of-{n_shards:05d}.parquet"
        pq.write_table(table, path, compression="zstd", row_group_size=1000)
        paths.append(path)
    return paths


def _prepare_target(out: Path) -> Path:
    """Check ``out`` can be replaced and return a fresh temporary sibling directory."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} is a file; choose a directory path")
    if out.is_dir() and any(out.iterdir()) and not (out / BUILD_INFO).exists():
        raise BuildError(
            f"--out {out} is a non-empty directory that was not written by the dataset "
            "builder; choose another --out or empty it first (nothing was changed)"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return staging_dir(out, kinds=("partial", "old"))
    except OSError as exc:
        raise BuildError(
            f"cannot write the dataset next to {out} ({exc.strerror or exc}); choose an "
            "--out in a writable directory"
        ) from None


def _swap_in(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}-0")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _existing_info(out: Path) -> dict | None:
    """The build record of ``out`` (None if there is none), refused when it is not JSON
    or not of the shape the builder writes: an update merges into it."""
    fix = (
        "the directory's contents are unknown. Choose another --out or pass --replace to "
        "rebuild it from empty"
    )
    try:
        return read_build_info(out, fix=fix)
    except DatasetError as exc:
        raise BuildError(str(exc)) from None


def _keep_from(out: Path, tmp: Path, built: dict[str, list[str]]) -> None:
    """Copy into ``tmp`` everything of ``out`` this build does not rewrite."""
    for entry in out.iterdir():
        if entry.name in (BUILD_INFO, "README.md"):
            continue  # rewritten for the whole directory
        if entry.is_dir() and entry.name in built:
            for f in entry.iterdir():
                if not any(f.name.startswith(f"{split}-") for split in built[entry.name]):
                    shutil.copy2(f, tmp / entry.name / f.name)
        elif entry.is_dir():
            shutil.copytree(entry, tmp / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, tmp / entry.name, follow_symlinks=False)


def _config_from_info(name: str, info: dict) -> EpisodeConfig:
    try:
        config = described_config(name, {"configs": {name: info}})
    except DatasetError as exc:
        raise BuildError(f"{exc}; or pass --replace to rebuild the directory from empty") from None
    assert config is not None
    return config


def build_dataset(
    out: str | os.PathLike,
    configs: Sequence[EpisodeConfig],
    splits: Sequence[str] = SPLITS,
    sizes: dict[str, int] | None = None,
    seed: int = DEFAULT_SEED,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    progress: bool = True,
    replace: bool = False,
) -> BuildReport:
    """Generate and write the dataset; ``sizes`` overrides each config's split sizes.

    Into an existing builder directory, only the given (config, split) pairs are
    rewritten and the rest is kept; ``replace=True`` writes exactly what is built."""
    start = time.perf_counter()
    out = Path(out).expanduser().absolute()
    configs = list({c.name: c for c in configs}.values())  # each config once
    splits = list(dict.fromkeys(splits))
    if not configs:
        raise BuildError("no configs selected; pass at least one --config")
    for config in configs:
        for split in splits:
            n = (sizes or {}).get(split, config.split_sizes.get(split, 0))
            if n < 1:
                raise BuildError(
                    f"split {split!r} of config {config.name!r} would have {n} episodes, and an "
                    "empty split cannot be loaded; leave it out (--split) or give it >= 1"
                )
    for split in splits:
        if split not in SPLITS:
            raise BuildError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if shard_rows < 1:
        raise BuildError(f"--shard-rows must be >= 1, got {shard_rows}")
    with ExitStack() as stack:
        # Two builds into one --out would each merge into the record they read first, and
        # the later rename would drop the other's configs: the second waits for the first,
        # then merges into what the first wrote.
        try:
            stack.enter_context(exclusive(out, "dataset directory", wait=True))
        except OSError as exc:
            raise BuildError(
                f"cannot write the dataset next to {out} ({exc.strerror or exc}); choose an "
                "--out in a writable directory"
            ) from None
        report = _build_locked(out, configs, splits, sizes, seed, shard_rows, progress, replace)
    report.seconds = time.perf_counter() - start
    return report


def _build_locked(
    out: Path,
    configs: list[EpisodeConfig],
    splits: list[str],
    sizes: dict[str, int] | None,
    seed: int,
    shard_rows: int,
    progress: bool,
    replace: bool,
) -> BuildReport:
    """The build proper, with ``out``'s lock held: read what is there, write beside it,
    swap it in."""
    existing = None if replace else _existing_info(out) if out.is_dir() else None
    if existing and (existing.get("seed"), existing.get("generator_version")) != (
        seed,
        GENERATOR_VERSION,
    ):
        raise BuildError(
            f"{out} holds a build with seed {existing.get('seed')} (generator "
            f"{existing.get('generator_version')}); adding seed {seed} (generator "
            f"{GENERATOR_VERSION}) would mix them. Nothing was changed: pass --replace to "
            "drop what is there, or choose another --out"
        )
    tmp = _prepare_target(out)
    report = BuildReport(out=out, seed=seed)
    try:
        jobs = [(c, s) for c in configs for s in splits]
        bar = tqdm(jobs, desc="building", unit="split", disable=not progress)
        for config, split in bar:
            n = (sizes or {}).get(split, config.split_sizes.get(split, 0))
            bar.set_postfix_str(f"{config.name}/{split} ({n} episodes)")
            rows = [ep.to_row() for ep in generate_split(config, split, n, seed)]
            directory = tmp / config.name
            directory.mkdir(exist_ok=True)
            for path in _write_split(rows, directory, split, shard_rows):
                report.files[path.relative_to(tmp).as_posix()] = _sha256(path)
            report.counts.setdefault(config.name, {})[split] = n
        described = {c.name: {**c.to_dict(), "counts": report.counts[c.name]} for c in configs}
        files = dict(report.files)
        if existing:
            _keep_from(out, tmp, {c.name: list(splits) for c in configs})
            for name, old in existing.get("configs", {}).items():
                counts = {**old.get("counts", {}), **described.get(name, {}).get("counts", {})}
                described[name] = {**old, **described.get(name, {}), "counts": counts}
            built = {(c.name, s) for c in configs for s in splits}
            for path, digest in existing.get("files", {}).items():
                name, file = path.split("/", 1)
                if (name, file.split("-", 1)[0]) not in built:
                    files[path] = digest
        info = {
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "configs": dict(sorted(described.items())),
            "files": dict(sorted(files.items())),
        }
        (tmp / BUILD_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        whole = BuildReport(out=out, seed=seed, files=files)
        whole.counts = {name: dict(d["counts"]) for name, d in info["configs"].items()}
        all_configs = [_config_from_info(name, d) for name, d in info["configs"].items()]
        (tmp / "README.md").write_text(render_dataset_card(all_configs, whole, tmp), "utf-8")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report
