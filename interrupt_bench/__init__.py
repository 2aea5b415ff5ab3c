"""interrupt-bench core: everything the dataset builder, the lm-eval task pack and the
training script share (task families, checkers, episodes, tag parsing, scoring, the
session replay loop), so that each fact lives in exactly one place."""

from interrupt_bench.config import CONFIGS, EpisodeConfig, get_config
from interrupt_bench.episodes import GENERATOR_VERSION, Episode, generate_episode
from interrupt_bench.scoring import EpisodeScore, score_episode
from interrupt_bench.tags import parse_turn

__version__ = "0.1.0"

__all__ = [
    "CONFIGS",
    "GENERATOR_VERSION",
    "Episode",
    "EpisodeConfig",
    "EpisodeScore",
    "generate_episode",
    "get_config",
    "parse_turn",
    "score_episode",
]
