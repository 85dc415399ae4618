"""``lightning-lab run``: turn the parsed command line into a launch."""

from __future__ import annotations

import argparse
from pathlib import Path

from lightning_lab.launch.spec import LaunchSpec


def main_run(args: argparse.Namespace) -> int:
    """Run the script on the chosen backend; the exit code is the workers' (or the job's)."""
    script_args = list(args.script_args)
    spec = LaunchSpec(
        script=Path(args.script), args=script_args, backend=args.backend, devices=args.devices, nodes=args.nodes,
        partition=args.partition, time=args.time, name=args.name, root=args.root, accelerator=args.accelerator,
    )
    run_dir = Path(args.run_dir) if args.run_dir else None
    if spec.backend == "slurm":
        from lightning_lab.launch.slurm import run_slurm

        return run_slurm(spec, run_dir=run_dir)
    from lightning_lab.launch.local import run_local

    return run_local(spec, run_dir=run_dir)
