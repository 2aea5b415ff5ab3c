"""The task folder's generated YAMLs are ``_generate_configs.py``'s output, and the
metrics they declare are the ones the scorer gives lm-eval."""

import importlib.util

import yaml

from interrupt_bench import generate_episode, get_config, score_episode
from interrupt_bench.scoring import lm_eval_metrics
from lm_eval_tasks import TASKS_DIR


def generator():
    spec = importlib.util.spec_from_file_location("gen", TASKS_DIR / "_generate_configs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return gen


def test_committed_yamls_are_the_generators_output():
    files = generator().generated_files()
    assert len(files) == 14  # template, nine grid tasks, sweep, two controls, controls group
    for name, text in files.items():
        assert (TASKS_DIR / name).read_text() == text, f"{name}: run _generate_configs.py"


def test_metric_list_names_what_process_results_returns():
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    template = yaml.load((TASKS_DIR / "_interrupt_bench_template_yaml").read_text(), Loader)
    declared = {m["metric"]: m["aggregation"] for m in template["metric_list"]}
    episode = generate_episode(get_config("default"), "test", 0)
    score = score_episode(episode, [""] * episode.n_turns)
    assert set(declared) == set(lm_eval_metrics()) == set(score.items())
    for name, value in score.items().items():
        ratio = declared[name] == "utils.ratio"
        assert ratio == isinstance(value, tuple), name
