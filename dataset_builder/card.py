"""Render the dataset card (README.md with YAML front matter) from ``hub_cards/``.

The YAML ``configs:`` block globs each config's shards per split, which is what lets
``datasets.load_dataset(DIR_OR_REPO, NAME)`` find them; ``default: true`` marks the
config loaded when no name is given."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import yaml

from hub_cards import render_card
from interrupt_bench.config import EpisodeConfig
from interrupt_bench.controls import CONTROL_BUDGET
from interrupt_bench.costs import BUDGET_BINS, bin_name
from interrupt_bench.dataset import HUB_DATASET_ID
from interrupt_bench.episodes import GENERATOR_VERSION, generate_episode
from interrupt_bench.families import get_family
from interrupt_bench.policies import policy_responder
from interrupt_bench.schema import episode_features
from interrupt_bench.session import replay
from interrupt_bench.tasks import FAMILIES

if TYPE_CHECKING:
    from dataset_builder.build import BuildReport

SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                   (1_000_000, "100K<n<1M"))  # fmt: skip


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` tag for ``n`` examples."""
    return next((tag for limit, tag in SIZE_CATEGORIES if n < limit), "1M<n<10M")


def front_matter(configs: Sequence[EpisodeConfig], report: BuildReport, root: Path) -> dict:
    cfgs, infos = [], []
    for config in configs:
        splits = list(report.counts[config.name])
        entry = {
            "config_name": config.name,
            "data_files": [{"split": s, "path": f"{config.name}/{s}-*"} for s in splits],
        }
        if config.name == "default":
            entry["default"] = True
        cfgs.append(entry)
        split_infos = []
        for s in splits:
            files = sorted((root / config.name).glob(f"{s}-*.parquet"))
            split_infos.append(
                {
                    "name": s,
                    "num_bytes": sum(f.stat().st_size for f in files),
                    "num_examples": sum(pq.read_metadata(f).num_rows for f in files),
                }
            )
        # A fresh features list per config: a shared object would be dumped as a YAML anchor.
        features = episode_features()._to_yaml_list()
        infos.append({"config_name": config.name, "features": features, "splits": split_infos})
    return {
        "license": "apache-2.0",
        "language": ["en", "fr", "es", "de"],
        "pretty_name": "interrupt-bench",
        "task_categories": ["text-generation"],
        "tags": ["multi-turn", "interruption", "llm-evaluation", "synthetic"],
        "size_categories": [size_category(report.episodes)],
        "configs": cfgs,
        "dataset_info": infos,
    }


def example_transcript(config: EpisodeConfig, seed: int, search: int = 50) -> dict:
    """A test episode replayed by the oracle policy: the first of the first ``search``
    in which the budget cuts an answer that the oracle then resumes (else episode 0)."""
    episodes = [generate_episode(config, "test", i, seed) for i in range(search)]
    transcripts = replay(episodes, policy_responder("oracle"))
    chosen = next((t for t in transcripts if t.score().reattempts > 0), transcripts[0])
    return {**chosen.to_dict(), "system": chosen.messages()[0]["content"]}


def render_dataset_card(configs: Sequence[EpisodeConfig], report: BuildReport, root: Path) -> str:
    example_config = next((c for c in configs if c.name == "default"), configs[0])
    families = {name for c in configs for name in c.families}
    context = {
        "yaml_header": yaml.safe_dump(
            front_matter(configs, report, root), sort_keys=False, allow_unicode=True, width=100
        ).strip(),
        "configs": configs,
        "counts": report.counts,
        "seed": report.seed,
        "generator_version": GENERATOR_VERSION,
        "hub_id": HUB_DATASET_ID,
        "default_config": example_config.name,
        "families": [get_family(name) for name in sorted(families) if name in FAMILIES],
        "example": example_transcript(example_config, report.seed),
        "control_budget": CONTROL_BUDGET,
        "cost_bins": [bin_name(lo, hi).removeprefix("budget") for lo, hi in BUDGET_BINS],
    }
    return render_card("dataset_card.md.j2", **context).strip() + "\n"
