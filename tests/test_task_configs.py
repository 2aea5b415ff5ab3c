"""The task folder's generated YAMLs are ``_generate_configs.py``'s output, and the
metrics they declare are the ones the scorer gives lm-eval."""

import importlib.util
import json

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
    # template; nine grid tasks and their sweep; easy, its three grid tasks and sweep; two
    # controls; the paired controls of default, easy and the twelve grid configs, with the
    # two sweeps of them; three validation variants and the training config's paired one
    assert len(files) == 1 + 10 + 5 + 2 + 2 + 12 + 2 + 3 + 1
    for name, text in files.items():
        assert (TASKS_DIR / name).read_text() == text, f"{name}: run _generate_configs.py"


class Loader(yaml.SafeLoader):
    pass


Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def declared_metrics(name: str) -> dict[str, str]:
    """The metric list a task file declares, or the template's when it declares none."""
    task = yaml.load((TASKS_DIR / name).read_text(), Loader)
    if "metric_list" not in task:
        task = yaml.load((TASKS_DIR / "_interrupt_bench_template_yaml").read_text(), Loader)
    return {m["metric"]: m["aggregation"] for m in task["metric_list"]}


def test_metric_list_names_what_process_results_returns():
    for config, task in (
        ("default", "_interrupt_bench_template_yaml"),
        ("easy", "interrupt_bench_easy.yaml"),
        ("easy_tasks5_budget0to50", "interrupt_bench_easy_tasks5_budget0to50.yaml"),
    ):
        declared = declared_metrics(task)
        episode = generate_episode(get_config(config), "test", 0)
        score = score_episode(episode, [""] * episode.n_turns)
        families = get_config(config).families
        items = utils().process_results(episode.to_row(), [record(episode)])
        assert set(declared) == set(lm_eval_metrics(families)) == set(score.items(families))
        assert set(items) == set(declared), task
        for name, value in items.items():
            ratio = declared[name] == "utils.ratio"
            assert ratio == isinstance(value, tuple), name


def test_paired_tasks_declare_what_process_results_returns():
    from interrupt_bench.controls import labelled_sessions
    from interrupt_bench.costs import paired_metrics

    for config, task in (
        ("default", "interrupt_bench_controls.yaml"),
        ("easy", "interrupt_bench_easy_controls.yaml"),
        ("tasks10_budget0to50", "interrupt_bench_tasks10_budget0to50_controls.yaml"),
    ):
        meta = yaml.load((TASKS_DIR / task).read_text(), Loader)["metadata"]
        assert meta["condition"] == "paired", task
        declared = declared_metrics(task)
        assert set(declared) == set(paired_metrics())
        episode = generate_episode(get_config(config), "test", 0)
        sessions = [
            {
                "condition": c,
                "row": s.to_row(),
                "outputs": [""] * s.n_turns,
                "cut": [True] * s.n_turns,
            }
            for c, s in labelled_sessions(episode, "paired")
        ]
        items = utils().process_results(episode.to_row(), [json.dumps({"sessions": sessions})])
        assert set(items) == set(declared), task
        for name, value in items.items():
            assert (declared[name] == "utils.ratio") == isinstance(value, tuple), name


def utils():
    spec = importlib.util.spec_from_file_location("ib_utils", TASKS_DIR / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(episode) -> str:
    """A hook result of one interrupted session with empty outputs."""
    return json.dumps(
        {
            "sessions": [
                {
                    "condition": "interrupted",
                    "row": episode.to_row(),
                    "outputs": [""] * episode.n_turns,
                    "cut": [True] * episode.n_turns,
                }
            ]
        }
    )
