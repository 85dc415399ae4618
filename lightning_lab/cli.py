"""The ``lightning-lab`` command: demo, runs, export, run, batch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lightning_lab.errors import LabError


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

    run = sub.add_parser("run", help="run a training script on several processes or on Slurm",
                         description="Run SCRIPT with the same engine on several local processes (torch's elastic "
                         "launcher) or as a Slurm job; everything after `--` goes to the script.")
    run.add_argument("script", help="the training script (e.g. one `lightning-lab export` wrote)")
    run.add_argument("--backend", choices=("local", "slurm"), default="local", help="where to run (default local)")
    run.add_argument("--devices", type=int, default=1, help="processes (one per GPU on CUDA) per node (default 1)")
    run.add_argument("--nodes", type=int, default=1, help="nodes, with --backend slurm (default 1)")
    run.add_argument("--partition", default=None, help="Slurm partition")
    run.add_argument("--time", default=None, help="Slurm time limit, e.g. 1:00:00")
    run.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "cuda"),
                     help="decides whether Slurm asks for GPUs (default auto: cuda when this machine has one)")
    run.add_argument("--name", default=None, help="run name (default: the script's name)")
    run.add_argument("--root", default=None, help="run root (default $LIGHTNING_LAB_ROOT or ./lab_runs)")
    run.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)  # a run directory prepared by %%train
    run.add_argument("script_args", nargs="*", metavar="-- ARGS", help="the script's own arguments, after --")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (a user mistake: one line on stderr and 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    passed: list[str] = []
    if argv[:1] == ["run"] and "--" in argv:  # `run SCRIPT [options] -- ARGS`: ARGS belong to the script
        cut = argv.index("--")
        argv, passed = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if args.command == "run":
        args.script_args = [*args.script_args, *passed]
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
        elif args.command == "run":
            from lightning_lab.launch.cli import main_run

            return main_run(args)
        elif args.command == "runs":
            from lightning_lab.runs import list_runs
            from lightning_lab.runs.table import runs_table

            print(runs_table(list_runs(args.root, name=args.name)))
    except LabError as err:
        print(f"lightning-lab {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lightning-lab {args.command}: interrupted.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
