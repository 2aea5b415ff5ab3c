"""Write every (config, split) as parquet shards plus a dataset card, atomically.

Output goes to a temporary sibling directory that replaces ``out`` only once complete,
so a failed or interrupted build never leaves a half-written dataset behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from interrupt_bench.config import SPLITS, EpisodeConfig
from interrupt_bench.dataset import episode_features
from interrupt_bench.episodes import DEFAULT_SEED, GENERATOR_VERSION, generate_split
from interrupt_bench.errors import InterruptBenchError

BUILD_INFO = "build_info.json"
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
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise BuildError(
            f"cannot write the dataset next to {out} ({exc.strerror or exc}); choose an "
            "--out in a writable directory"
        ) from None


def _swap_in(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_dataset(
    out: str | os.PathLike,
    configs: Sequence[EpisodeConfig],
    splits: Sequence[str] = SPLITS,
    sizes: dict[str, int] | None = None,
    seed: int = DEFAULT_SEED,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    progress: bool = True,
) -> BuildReport:
    """Generate and write the dataset; ``sizes`` overrides each config's split sizes."""
    from dataset_builder.card import render_dataset_card

    start = time.perf_counter()
    out = Path(out).expanduser().absolute()
    if not configs:
        raise BuildError("no configs selected; pass at least one --config")
    for split in splits:
        if split not in SPLITS:
            raise BuildError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if shard_rows < 1:
        raise BuildError(f"--shard-rows must be >= 1, got {shard_rows}")
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
        info = {
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "configs": {c.name: {**c.to_dict(), "counts": report.counts[c.name]} for c in configs},
            "files": report.files,
        }
        (tmp / BUILD_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(render_dataset_card(configs, report, tmp), "utf-8")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.seconds = time.perf_counter() - start
    return report
