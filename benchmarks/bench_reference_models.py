"""Build time and size of the reference models (issue 5 asks for <= 15 minutes each on a
2-core machine).

    .venv/bin/python benchmarks/bench_reference_models.py [--size mini --size small ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

GOAL_SECONDS = 15 * 60


def main() -> None:
    from local_models.reference import SIZES, build_reference_model

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", action="append", choices=sorted(SIZES), help="default: mini")
    args = parser.parse_args()
    print(
        f"{'size':6} {'parameters':>11} {'on disk':>9} {'build':>8} {'of goal':>8} "
        f"{'task loss':>9} {'session loss':>12}"
    )
    for size in args.size or ["mini"]:
        with tempfile.TemporaryDirectory() as tmp:
            path = build_reference_model(size, Path(tmp) / size, progress=False)
            info = json.loads((path / "reference_model.json").read_text())
            disk = sum(p.stat().st_size for p in path.iterdir()) / 2**20
        loss = info["final_loss"]
        print(
            f"{size:6} {info['parameters']:>11,} {disk:>7.1f}MB {info['seconds']:>7.1f}s "
            f"{info['seconds'] / GOAL_SECONDS:>8.2f} "
            f"{loss['tasks']:>9.3f} {loss['sessions']:>12.3f}"
        )


if __name__ == "__main__":
    main()
