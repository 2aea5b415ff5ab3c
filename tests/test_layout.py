"""The arrows of ARCHITECTURE.md, checked on every import statement (deferred ones
included): the protocol imports no front end, and no front end imports one above it."""

import ast

import pytest

from .conftest import ROOT

OURS = {
    "interrupt_bench", "local_models", "lm_eval_tasks", "inspect_tasks", "training",
    "dataset_builder", "hub_cards", "commands",
}  # fmt: skip
FRONT_END_LIBRARIES = {"lm_eval", "inspect_ai", "peft", "accelerate"}

# package -> what it must never import (ours and third-party)
FORBIDDEN = {
    "interrupt_bench": (OURS - {"interrupt_bench"})
    | FRONT_END_LIBRARIES
    | {"torch", "transformers"},
    "hub_cards": OURS - {"interrupt_bench", "hub_cards"} | FRONT_END_LIBRARIES,
    "dataset_builder": {"local_models", "lm_eval_tasks", "inspect_tasks", "training", "commands",
                        "torch"}
    | FRONT_END_LIBRARIES,
    "local_models": {"lm_eval_tasks", "inspect_tasks", "training", "dataset_builder", "commands"}
    | FRONT_END_LIBRARIES,
    "lm_eval_tasks": {"inspect_tasks", "training", "dataset_builder", "commands", "inspect_ai",
                      "peft", "accelerate"},
    "inspect_tasks": {"lm_eval_tasks", "training", "dataset_builder", "hub_cards", "commands",
                      "lm_eval", "peft", "accelerate"},
    "training": {"lm_eval_tasks", "inspect_tasks", "dataset_builder", "commands", "lm_eval",
                 "inspect_ai"},
}  # fmt: skip


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level package name -> the files of ``package`` that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_sits_below_it(package):
    imports = imported_packages(package)
    broken = {name: sorted(imports[name]) for name in FORBIDDEN[package] if name in imports}
    assert not broken, f"{package} imports what it must not: {broken}"


# The lm-eval front end's modules, one job each, and the modules of the package each may
# import (a floor below it): what plays sessions sits on what a turn and its settings are.
LM_EVAL_MODULES = {
    "settings": set(),  # RunSettings: a request's settings, checked when made
    "turns": {"settings"},  # a turn's prompt and text, SessionReplayError
    "vllm_backend": {"settings"},  # vLLM as a SessionBackend; which LM holds a vllm.LLM
    "cache_identity": {"vllm_backend"},  # --use_cache keyed on the model
    "responder": {"settings", "turns", "cache_identity"},  # turns through generate_until
    "backends": {"settings", "turns", "cache_identity"},  # SessionBackend, the one replay
    "dispatch": {"settings", "backends", "vllm_backend", "responder"},  # interrupt_session
    "scripted_lm": set(),
    "vllm_lm": {"vllm_backend"},
    "figures": set(),
    "resumed_answers": {"figures"},  # from logged samples: resumed answers, closing turns
    "cli": {"scripted_lm", "vllm_lm"},
    "interrupt_bench.utils": {"dispatch", "settings"},  # the task folder's lm-eval glue
    "interrupt_bench._generate_configs": {"settings"},
}
MAX_MODULE_LINES = 450  # a module longer than this holds more than one job


def test_lm_eval_modules_import_only_the_floors_below_them():
    package = ROOT / "lm_eval_tasks"
    found = {
        str(p.relative_to(package).with_suffix("")).replace("/", ".")
        for p in package.rglob("*.py")
        if p.name != "__init__.py"
    }
    assert found == set(LM_EVAL_MODULES), "update LM_EVAL_MODULES to the package's modules"
    broken = {}
    for module, allowed in LM_EVAL_MODULES.items():
        path = package / (module.replace(".", "/") + ".py")
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
        ours = "lm_eval_tasks."
        imported = {n.removeprefix(ours) for n in names if n.startswith(ours)}
        if imported - allowed:
            broken[module] = sorted(imported - allowed)
    assert not broken, f"lm_eval_tasks modules import above their floor: {broken}"


@pytest.mark.parametrize("package", ["interrupt_bench", "lm_eval_tasks", "inspect_tasks"])
def test_no_module_holds_more_than_one_job(package):
    long = {
        str(p.relative_to(ROOT)): n
        for p in sorted((ROOT / package).rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_every_package_of_ours_is_checked_and_shipped():
    text = (ROOT / "pyproject.toml").read_text()
    for package in OURS:
        assert (ROOT / package / "__init__.py").exists(), package
        assert f'"{package}"' in text, f"{package} is not in pyproject's packages"
    assert set(FORBIDDEN) | {"commands"} == OURS


def test_the_core_imports_alone(tmp_path):
    """Importing every core module pulls in no front end (checked in a fresh process)."""
    import subprocess
    import sys

    code = (
        "import pkgutil, sys, interrupt_bench\n"
        "for m in pkgutil.walk_packages(interrupt_bench.__path__, 'interrupt_bench.'):\n"
        "    __import__(m.name)\n"
        f"bad = sorted(set({sorted(FORBIDDEN['interrupt_bench'])!r}) & set(sys.modules))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    cmd = [sys.executable, "-c", code]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_wheel_ships_templates_task_yamls_and_cards(tmp_path):
    """An installed package finds its templates, task folder and cards through
    importlib.resources, so the wheel must carry them."""
    import subprocess
    import sys
    import zipfile

    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
           str(ROOT), "-w", str(tmp_path)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    names = set(zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist())
    shipped = [
        *(
            f"interrupt_bench/templates/{p.name}"
            for p in (ROOT / "interrupt_bench/templates").iterdir()
        ),
        *(f"hub_cards/{p.name}" for p in (ROOT / "hub_cards").glob("*.j2")),
        "inspect_tasks/eval.yaml",
        *(
            f"lm_eval_tasks/interrupt_bench/{p.name}"
            for p in (ROOT / "lm_eval_tasks/interrupt_bench").iterdir()
            if p.is_file()
        ),
    ]
    missing = sorted(set(shipped) - names)
    assert not missing, f"not in the wheel: {missing}"


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading: lower case, punctuation dropped
    (hyphens and underscores kept), spaces as hyphens."""
    import re

    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_relative_links_in_the_docs_resolve():
    """Every relative link of the READMEs, ARCHITECTURE, RESULTS and docs/*.md names a file
    that exists, and an ``#anchor`` names a heading of that file."""
    import re

    pages = [
        *(ROOT / name for name in ("README.md", "ARCHITECTURE.md", "RESULTS.md")),
        ROOT / "lm_eval_tasks/interrupt_bench/README.md",
        *sorted((ROOT / "docs").glob("*.md")),
    ]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)
                if anchor not in {_github_anchor(h) for h in headings}:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


# The modules of commands/ and training/ split by job (issue 36): each short enough to read
# in one sitting and named, with its job, in ARCHITECTURE.md's table.
SPLIT_MODULES = (
    "commands/errors.py", "commands/tiers.py", "commands/model_spec.py", "commands/resume.py",
    "commands/lm_eval_runs.py", "commands/tables.py", "commands/charts.py",
    "commands/reproduce.py", "commands/evaluate.py", "training/reinforce.py",
    "training/run_setup.py", "training/step_parts.py", "training/finish.py", "training/config.py",
)  # fmt: skip


@pytest.mark.parametrize("module", SPLIT_MODULES)
def test_split_modules_are_short_and_in_the_architecture(module):
    path = ROOT / module
    lines = len(path.read_text().splitlines())
    assert lines <= 450, f"{module} has {lines} lines; split it by job"
    assert f"`{path.name}`" in (ROOT / "ARCHITECTURE.md").read_text(), module
