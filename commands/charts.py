"""The tables' PNGs: one panel of grouped bars per metric."""

from __future__ import annotations

from pathlib import Path


def _bars(ax, groups: list[str], series: dict[str, list[float]]) -> None:
    width = 1 / (len(series) + 1)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))], values,
               width=width, label=name)  # fmt: skip
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.legend(fontsize=7)


def figure(path: Path, title: str, panels: list[tuple[str, list[str], dict]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (name, groups, series) in zip(axes[0], panels):
        _bars(ax, groups, series)
        ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
