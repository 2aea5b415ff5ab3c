"""The demonstration variants' table from `benchmarks/demonstration_variants.sh` output:
one row per variant (accuracy, no-cut accuracy, interruption cost with stderr; resumption,
re-attempt and overwrite rates of the interrupted sessions, counted from the logged
transcripts), as the task README's "Demonstrations" table.

    .venv/bin/python benchmarks/demonstration_table.py out/variants/MODEL-MODE
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(variant: Path) -> str:
    (results,) = variant.rglob("results_*.json")
    (metrics,) = json.loads(results.read_text())["results"].values()

    def cell(name: str) -> str:
        value, err = metrics[f"{name},strict"], metrics.get(f"{name}_stderr,strict")
        return f"{value:.3f} ± {err:.3f}" if isinstance(err, float) else f"{value:.3f}"

    tasks = resumed = open_own = reattempted = overwritten = 0
    for samples in variant.rglob("samples_*.jsonl"):
        for line in samples.read_text().splitlines():
            record = json.loads(line)
            if record["filter"] != "strict":
                continue
            sessions = json.loads(record["resps"][0][0])["sessions"]
            for session in sessions:
                if session["condition"] != "interrupted":
                    continue
                for v in session["verdicts"]:
                    tasks += 1
                    reattempted += any(t > v["task_id"] for t in v["attempt_turns"])
                    overwritten += bool(v.get("overwritten"))
                    if not v["answered_in_own_turn"]:
                        open_own += 1
                        resumed += v["answered_later"]
    rule, shots = variant.name.rsplit("-", 1)
    return (
        f"| {rule} | {shots.removesuffix('shot')} | {cell('accuracy')} | "
        f"{cell('accuracy_nocut')} | {cell('interruption_cost')} | "
        f"{resumed / max(open_own, 1):.3f} ({resumed}/{open_own}) | "
        f"{reattempted / tasks:.3f} | {overwritten / tasks:.3f} |"
    )


def main(root: str) -> None:
    print("| fewshot_rule | shots | accuracy | no-cut accuracy | interruption cost | "
          "resumption | re-attempt rate | overwrite rate |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for variant in sorted(p for p in Path(root).iterdir() if (p / "done").exists()):
        print(row(variant))


if __name__ == "__main__":
    main(sys.argv[1])
