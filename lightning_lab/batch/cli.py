"""``lightning-lab batch``: the command line of :func:`lightning_lab.batch.run`."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from lightning_lab.errors import LabError

PROG = "lightning-lab batch"


def build_parser() -> argparse.ArgumentParser:
    """The ``batch`` options (also what ``lightning-lab batch --help`` shows)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Execute a notebook once per grid point with papermill, N points at a time, and "
                    "collect each point's final metrics into results.csv, a table and a plot.",
        epilog="Example: lightning-lab batch notebooks/01_quickstart.ipynb --grid lr=1e-3,3e-3 "
               "--grid hidden=32,64 --param max_epochs=2 --workers 2",
    )
    parser.add_argument("notebook", metavar="NOTEBOOK", help="the notebook (values go into its 'parameters' cell)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="values of one parameter; every combination of all --grid options is a point. "
                             "Values are Python literals when they parse (1e-3, 64, True, [32,32]), else strings")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=V",
                        help="a value given to every point (e.g. --param max_epochs=2)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="points executed at once (default: the number of --gpus, else 1)")
    parser.add_argument("--gpus", default=None, metavar="0,1",
                        help="GPU ids; worker k runs its kernels with CUDA_VISIBLE_DEVICES=gpus[k %% len]")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (default: ./lab_batch/<notebook name>)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="seconds one cell may run before its point fails (default: no limit)")
    parser.add_argument("--kernel", default=None, metavar="NAME", help="kernel to run (default: the notebook's)")
    parser.add_argument("--metric", default=None, metavar="M",
                        help="metric to plot and rank by (default: val_loss, else the first one all points report)")
    parser.add_argument("--rerun", action="store_true",
                        help="execute again the points an earlier sweep into --out completed (default: skip them)")
    return parser


def main_batch(argv: Sequence[str] | None = None) -> int:
    """Run ``lightning-lab batch``; returns the exit code.

    0: every point completed (or was completed by an earlier sweep); 1: a point failed; 2: a
    mistake in the command (one line on stderr); 130: interrupted with Ctrl-C.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or an argparse error (2, already printed)
        return exc.code if isinstance(exc.code, int) else 2
    from lightning_lab.batch.api import BatchWarning, run
    from lightning_lab.batch.grid import parse_grid_options

    with warnings.catch_warnings():
        warnings.simplefilter("always", BatchWarning)
        warnings.showwarning = _show_warning
        try:
            grid, params = parse_grid_options(args.grid, args.param)
            result = run(args.notebook, grid, params, workers=args.workers, gpus=args.gpus, out=args.out,
                         timeout=args.timeout, kernel=args.kernel, metric=args.metric, rerun=args.rerun)
        except LabError as err:
            print(f"{PROG}: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted; completed points are kept and the same command continues the sweep.",
                  file=sys.stderr)
            return 130
    return 0 if result.ok else 1


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)
