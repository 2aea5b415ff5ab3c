"""The builder writes the Hub layout, loads back through datasets, and is byte-stable."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from dataset_builder import build_dataset
from dataset_builder.build import BuildError
from hub_cards.push import HubError, push_to_hub
from interrupt_bench.config import CONFIGS, get_config
from interrupt_bench.dataset import load_episodes
from interrupt_bench.episodes import Episode, generate_episode
from interrupt_bench.errors import DatasetError

from .conftest import SMALL, SMALL_CONFIGS

ROOT = Path(__file__).resolve().parents[1]


def _entries(directory: Path) -> list[str]:
    """What is in ``directory`` besides the writers' lock files (``.NAME.lock``, empty
    once released; ``interrupt_bench.locking`` keeps them so a lock is never split)."""
    return sorted(p.name for p in directory.iterdir() if p.suffix != ".lock")


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_hub_layout_and_card(small_dataset):
    files = sorted(
        p.relative_to(small_dataset).as_posix() for p in small_dataset.rglob("*") if p.is_file()
    )
    expected = {f"{c}/{s}-00000-of-00001.parquet" for c in SMALL_CONFIGS for s in SMALL}
    assert set(files) == expected | {"README.md", "build_info.json"}
    card = (small_dataset / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    by_name = {c["config_name"]: c for c in header["configs"]}
    assert set(by_name) == set(SMALL_CONFIGS)
    assert by_name["default"]["default"] is True
    assert {"split": "test", "path": "default/test-*"} in by_name["default"]["data_files"]
    assert "load_dataset" in card and "resumption_rate" in card and "<question task=1>" in card


def test_every_config_loads_with_load_dataset(small_dataset):
    for name in SMALL_CONFIGS:
        for split, n in SMALL.items():
            ds = datasets.load_dataset(str(small_dataset), name, split=split)
            assert len(ds) == n
            episode = Episode.from_row(ds[0])
            assert episode == generate_episode(get_config(name), split, 0)
    default = datasets.load_dataset(str(small_dataset), split="test")  # no config name
    assert default[0]["config"] == "default"


def test_rebuild_is_byte_identical(small_dataset, tmp_path):
    again = tmp_path / "again"
    build_dataset(again, [get_config(n) for n in SMALL_CONFIGS], sizes=SMALL, progress=False)
    assert _hashes(again) == _hashes(small_dataset)


def test_other_seed_changes_rows_and_splits_are_disjoint(tmp_path):
    config = get_config("default")
    a = [generate_episode(config, "test", i, 1).tasks for i in range(20)]
    b = [generate_episode(config, "test", i, 2).tasks for i in range(20)]
    assert a != b
    seeds = {
        s: {generate_episode(config, s, i).seed for i in range(200)}
        for s in ("train", "validation", "test")
    }
    assert not (seeds["train"] & seeds["test"]) and not (seeds["validation"] & seeds["test"])


def _card_header(out: Path) -> dict:
    return yaml.safe_load((out / "README.md").read_text().split("---")[1])


def test_partial_rebuild_keeps_what_it_did_not_rebuild(tmp_path):
    """docs/dataset.md's own example: rebuilding one config's test split into a full build."""
    out = tmp_path / "ds"
    three = {"train": 3, "validation": 3, "test": 3}
    configs = [get_config("default"), get_config("tasks2_budget0to50")]
    build_dataset(out, configs, sizes=three, progress=False)
    (out / "notes.txt").write_text("mine")
    before = _hashes(out)
    build_dataset(out, [get_config("default")], splits=["test"], sizes={"test": 5}, progress=False)
    after = _hashes(out)
    kept = {k for k in before if k != "default/test-00000-of-00001.parquet"}
    kept -= {"README.md", "build_info.json"}
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}  # byte for byte
    assert len(load_episodes(out, "default", "test")) == 5
    assert len(load_episodes(out, "tasks2_budget0to50", "train")) == 3
    info = json.loads((out / "build_info.json").read_text())
    assert info["configs"]["default"]["counts"] == {"train": 3, "validation": 3, "test": 5}
    assert info["configs"]["tasks2_budget0to50"]["counts"] == three
    assert set(info["files"]) == {k for k in after if k.endswith(".parquet")}
    assert all(info["files"][k] == after[k] for k in info["files"])
    header = _card_header(out)
    assert [c["config_name"] for c in header["configs"]] == ["default", "tasks2_budget0to50"]
    assert not [name for name in _entries(tmp_path) if name.startswith(".")]
    # --replace is the way to drop the rest
    build_dataset(out, [get_config("default")], splits=["test"], sizes={"test": 2},
                  progress=False, replace=True)  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "build_info.json", "default"]


def test_partial_build_with_another_seed_is_refused(tmp_path):
    out = tmp_path / "ds"
    build_dataset(out, [get_config("default")], sizes={"test": 2}, splits=["test"], progress=False)
    before = _hashes(out)
    with pytest.raises(BuildError, match=r"seed 1234 .* adding seed 7 .* would mix them"):
        build_dataset(out, [get_config("default")], splits=["test"], sizes={"test": 2},
                      seed=7, progress=False)  # fmt: skip
    assert _hashes(out) == before


def test_empty_split_is_refused(tmp_path):
    with pytest.raises(BuildError, match="empty split cannot be loaded"):
        build_dataset(tmp_path / "ds", [get_config("default")], splits=["test"],
                      sizes={"test": 0}, progress=False)  # fmt: skip
    proc = _cli("build", "--out", str(tmp_path / "ds"), "--num-test", "0", "--split", "test")
    assert proc.returncode == 2 and "--num-test is 0; an empty split cannot be loaded" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr and not (tmp_path / "ds").exists()


def test_duplicate_configs_build_once_and_size_category_is_derived(tmp_path):
    out = tmp_path / "ds"
    proc = _cli("build", "--out", str(out), "--config", "default", "--config", "default",
                "--split", "test", "--num-test", "3", "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "(1 configs)" in proc.stdout
    header = _card_header(out)
    assert [c["config_name"] for c in header["configs"]] == ["default"]
    assert header["size_categories"] == ["n<1K"]


def test_built_directory_has_the_usual_mode_and_leftovers_are_cleaned(tmp_path):
    import os

    out = tmp_path / "ds"
    dead = tmp_path / ".ds.partial-999999999-abc"  # what a SIGKILLed build leaves
    dead.mkdir()
    (dead / "x.parquet").write_bytes(b"1" * 100)
    build_dataset(out, [get_config("default")], sizes={"test": 2}, splits=["test"], progress=False)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert not dead.exists()


def test_sigterm_ends_with_one_line_and_leaves_nothing(tmp_path):
    import signal
    import time

    out = tmp_path / "ds"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataset_builder", "build", "--out", str(out), "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 60
    while not any(tmp_path.glob(".ds.partial-*")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [f"interrupted (SIGTERM): nothing was changed in {out}"]
    assert _entries(tmp_path) == []


def test_refuses_foreign_directory_and_leaves_it_alone(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(BuildError, match="not written by the dataset builder"):
        build_dataset(out, [get_config("default")], sizes={"test": 2}, progress=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_unwritable_output_is_a_clear_error(tmp_path):
    # A path under a regular file cannot be created, even by root.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BuildError, match="writable"):
        build_dataset(blocker / "ds", [get_config("default")], sizes={"test": 2}, progress=False)
    assert blocker.read_text() == "x"


def test_unwritable_output_cli(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = _cli(
        "build", "--out", str(blocker / "ds"), "--config", "default", "--num-test", "2", "--quiet"
    )
    assert proc.returncode == 2
    assert "writable" in proc.stderr and "Traceback" not in proc.stderr


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    import dataset_builder.build as build

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(build, "_write_split", boom)
    with pytest.raises(RuntimeError):
        build_dataset(tmp_path / "ds", [get_config("default")], sizes={"test": 2}, progress=False)
    assert _entries(tmp_path) == []


def test_corrupt_parquet_is_named(small_dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(small_dataset, copy)
    victim = copy / "default" / "test-00000-of-00001.parquet"
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(DatasetError, match=r"test-00000-of-00001\.parquet is not a readable"):
        load_episodes(copy, "default", "test")


def test_schema_mismatch_is_named(small_dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(small_dataset, copy)
    victim = copy / "default" / "test-00000-of-00001.parquet"
    table = (
        pq.read_table(victim).drop_columns(["budgets"]).append_column("extra", pa.array([1] * 20))
    )
    pq.write_table(table, victim)
    with pytest.raises(DatasetError, match=r"budgets: expected list<item: int32>, found absent"):
        load_episodes(copy, "default", "test")


def test_corrupt_row_is_named():
    row = generate_episode(get_config("default"), "test", 3).to_row()
    row["budgets"] = row["budgets"][:-1]
    with pytest.raises(
        DatasetError, match=r"default-test-00003.*n_tasks=5 but 5 tasks and 4 budgets"
    ):
        Episode.from_row(row)
    row = generate_episode(get_config("default"), "test", 3).to_row()
    del row["tasks"]
    with pytest.raises(DatasetError, match="missing field"):
        Episode.from_row(row)


def test_missing_dataset_and_config(small_dataset, tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist.*dataset_builder build"):
        load_episodes(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no config 'tasks5_budget0to50'"):
        load_episodes(small_dataset, "tasks5_budget0to50")


def test_push_without_token_is_a_clear_error(small_dataset, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(HubError, match="HF_TOKEN"):
        push_to_hub(small_dataset, "someone/interrupt-bench")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dataset_builder", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_build_and_summary(tmp_path):
    out = tmp_path / "cli"
    proc = _cli(
        "build",
        "--out",
        str(out),
        "--config",
        "default",
        "--config",
        "tasks5_budget0to50",
        "--num-train",
        "5",
        "--num-validation",
        "5",
        "--num-test",
        "12",
        "--quiet",
        "--summary",
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 44 episodes in 6 parquet files" in proc.stdout
    assert "| default " in proc.stdout and "oracle" in proc.stdout and "no_resume" in proc.stdout
    info = json.loads((out / "build_info.json").read_text())
    assert info["configs"]["default"]["counts"] == {"train": 5, "validation": 5, "test": 12}


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--config", "nope"], "unknown config 'nope'"), (["--num-test", "-3"], "--num-test is -3")],
)
def test_cli_bad_input(tmp_path, args, message):
    proc = _cli("build", "--out", str(tmp_path / "x"), "--quiet", *args)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "x").exists()


def test_every_shipped_config_has_hundreds_of_test_episodes():
    assert all(
        c.split_sizes["test"] >= 200 and c.split_sizes["train"] > c.split_sizes["test"]
        for c in CONFIGS.values()
    )
