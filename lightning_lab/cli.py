"""The ``lightning-lab`` command: demo, runs (and export, run, batch as they land)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lightning_lab.errors import LabError

_LATER = {
    "run": "run a training script on several processes or on Slurm",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="lightning-lab", description="Notebook-first deep-learning runs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="train the digits example on real data and show the run")
    demo.add_argument("--max-epochs", type=int, default=10, help="epochs to train (default 10)")
    demo.add_argument("--root", default=None, help="run root (default $LIGHTNING_LAB_ROOT or ./lab_runs)")
    demo.add_argument("--seed", type=int, default=0, help="seed for weights and shuffling (default 0)")
    demo.add_argument("--notebook", default=None, help="also execute this notebook headless and keep the executed copy")

    runs = sub.add_parser("runs", help="table of the runs under the root")
    runs.add_argument("name", nargs="?", default=None, help="only runs of this name")
    runs.add_argument("--root", default=None, help="run root (default $LIGHTNING_LAB_ROOT or ./lab_runs)")

    # export parses its own options (-o, --cell, --help) in lightning_lab.export.
    export = sub.add_parser("export", help="turn a notebook into a training script (NB [-o SCRIPT] [--cell N])",
                            add_help=False, prefix_chars="\0")
    export.add_argument("args", nargs=argparse.REMAINDER)

    batch = sub.add_parser("batch", help="run a notebook over a hyperparameter grid (NB --grid KEY=V1,V2 ...)",
                           add_help=False, prefix_chars="\0")
    batch.add_argument("args", nargs=argparse.REMAINDER)

    for command, text in _LATER.items():
        later = sub.add_parser(command, help=f"{text} (not available yet)")
        later.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (a user mistake: one line on stderr and 2)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from lightning_lab.demo import run_demo

            run_demo(max_epochs=args.max_epochs, root=args.root, seed=args.seed, notebook=args.notebook)
        elif args.command == "export":
            from lightning_lab.export import main_export

            return main_export(args.args)
        elif args.command == "batch":
            from lightning_lab.batch import main_batch

            return main_batch(args.args)
        elif args.command == "runs":
            from lightning_lab.runs import list_runs
            from lightning_lab.runs.table import runs_table

            print(runs_table(list_runs(args.root, name=args.name)))
        else:
            print(f"lightning-lab {args.command}: not available yet ({_LATER[args.command]}).", file=sys.stderr)
            return 2
    except LabError as err:
        print(f"lightning-lab {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lightning-lab {args.command}: interrupted.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
