"""The grid's task YAMLs and the sweep group are ``_generate_configs.py``'s output."""

import importlib.util

from .conftest import ROOT

TASKS = ROOT / "lm_eval_tasks" / "interrupt_bench"


def test_committed_grid_yamls_are_the_generators_output():
    spec = importlib.util.spec_from_file_location("gen", TASKS / "_generate_configs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    files = gen.grid_files()
    assert len(files) == 10  # nine configs and the group
    for name, text in files.items():
        assert (TASKS / name).read_text() == text, f"{name}: run _generate_configs.py"
