"""``python -m dataset_builder``: build, summarise and push the interrupt-bench dataset."""

from __future__ import annotations

import argparse
import signal
import sys

from interrupt_bench.config import CONFIGS, SPLITS, get_config
from interrupt_bench.episodes import DEFAULT_SEED
from interrupt_bench.errors import InterruptBenchError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dataset_builder", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="write parquet shards and a dataset card to --out")
    b.add_argument(
        "--out",
        required=True,
        help="output directory, updated atomically: only the configs and splits built are "
        "rewritten, the rest is kept",
    )
    b.add_argument(
        "--replace",
        action="store_true",
        help="rebuild --out from empty: drop configs, splits and files not built now",
    )
    b.add_argument(
        "--config",
        action="append",
        dest="configs",
        metavar="NAME",
        help=f"config to build, repeatable (default: all {len(CONFIGS)})",
    )
    b.add_argument(
        "--split",
        action="append",
        dest="splits",
        choices=SPLITS,
        help="split to build, repeatable (default: all)",
    )
    for split in SPLITS:
        b.add_argument(f"--num-{split}", type=int, metavar="N", help=f"episodes in {split}")
    b.add_argument("--seed", type=int, default=DEFAULT_SEED, help="base seed (default %(default)s)")
    b.add_argument("--shard-rows", type=int, default=10_000, help="rows per parquet shard")
    b.add_argument("--push-to-hub", metavar="REPO_ID", help="upload to this Hub dataset repo")
    b.add_argument("--private", action="store_true", help="create the Hub repo as private")
    b.add_argument("--summary", action="store_true", help="print the summary after building")
    b.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("summary", help="load a built dataset back and describe it")
    s.add_argument("path")
    s.add_argument("--config", action="append", dest="configs", metavar="NAME")

    u = sub.add_parser("push", help="upload a built directory to the Hub")
    u.add_argument("path")
    u.add_argument("repo_id")
    u.add_argument("--private", action="store_true")

    sub.add_parser("configs", help="list the shipped configs")
    return p


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)  # unwind like Ctrl-C, so the build cleans up
    try:
        return _run(args)
    except InterruptBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        where = f" {args.out}" if getattr(args, "out", None) else ""
        print(f"interrupted ({exc or 'SIGINT'}): nothing was changed in{where or ' the output'}",
              file=sys.stderr)  # fmt: skip
        return 130


def _run(args: argparse.Namespace) -> int:
    from dataset_builder.build import build_dataset
    from dataset_builder.summary import summarise
    from hub_cards.push import push_to_hub

    if args.command == "configs":
        for c in CONFIGS.values():
            print(
                f"{c.name:28} tasks={c.n_tasks:<3} budgets={c.budget_lo}-{c.budget_hi:<4} "
                f"closing={c.closing_budget}  {c.description}"
            )
        return 0
    if args.command == "push":
        print(push_to_hub(args.path, args.repo_id, args.private))
        return 0
    if args.command == "summary":
        print(summarise(args.path, args.configs))
        return 0

    names = list(dict.fromkeys(args.configs or CONFIGS))  # each config once
    configs = [get_config(name) for name in names]
    sizes = {s: getattr(args, f"num_{s}") for s in SPLITS if getattr(args, f"num_{s}") is not None}
    for split, n in sizes.items():
        if n < 1:
            raise InterruptBenchError(
                f"--num-{split} is {n}; an empty split cannot be loaded. Use a count >= 1, or "
                f"leave {split} out with --split"
            )
    report = build_dataset(
        args.out,
        configs,
        splits=args.splits or SPLITS,
        sizes=sizes,
        seed=args.seed,
        shard_rows=args.shard_rows,
        progress=not args.quiet,
        replace=args.replace,
    )
    print(
        f"wrote {report.episodes} episodes in {len(report.files)} parquet files "
        f"({len(configs)} configs) to {report.out} in {report.seconds:.2f} s"
    )
    if args.summary:
        print()
        print(summarise(report.out, [c.name for c in configs]))
    if args.push_to_hub:
        print(f"pushed: {push_to_hub(report.out, args.push_to_hub, args.private)}")
    return 0
