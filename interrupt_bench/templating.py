"""The one owner of jinja2 environments: prompts (``interrupt_bench/templates/``) and
Hub cards (``hub_cards/``) both render through :func:`environment`.

Every environment is jinja2's immutable sandbox with strict undefined variables, so
nothing a model writes (or a dataset row holds) is ever evaluated as code, and a
template that names a missing value fails instead of printing an empty string.
Templates are found through the installed package (``importlib.resources``), so an
installed wheel renders the same text as a checkout."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment


def package_dir(package: str, folder: str = "") -> Path:
    """The directory ``folder`` inside an installed package (a checkout or a wheel)."""
    return Path(str(resources.files(package).joinpath(folder)))


@functools.cache
def environment(directory: str | Path, cards: bool = False) -> ImmutableSandboxedEnvironment:
    """The sandboxed environment over ``directory``. ``cards`` adds the whitespace
    control that Markdown cards are written for (``trim_blocks``, ``lstrip_blocks``);
    prompts keep every character their template has."""
    return ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(directory)),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
        trim_blocks=cards,
        lstrip_blocks=cards,
    )
