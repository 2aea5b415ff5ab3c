"""interrupt-bench's protocol (docs/protocol.md): task families, checkers, configs,
episodes and their row schema, tags, prompts, scoring, controls, reference policies,
demonstrations, the session loop and dataset loading.

Every front end (``dataset_builder``, ``lm_eval_tasks``, ``training``, ``local_models``,
``commands``) imports this package; it imports none of them, nor lm-eval, peft,
accelerate, torch or transformers (``tests/test_layout.py``)."""

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
