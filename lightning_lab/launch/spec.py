"""LaunchSpec: what to run, where, and on how many processes."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from lightning_lab.errors import ConfigurationError

BACKENDS = ("local", "slurm")


@dataclass
class LaunchSpec:
    """One launch of a training script.

    Attributes:
        script: The Python script to run (made absolute).
        args: Its command-line arguments.
        backend: ``"local"`` (worker processes on this machine through torch's elastic launcher)
            or ``"slurm"`` (an sbatch job, one task per process).
        devices: Processes per node (one per GPU on CUDA; CPU processes otherwise).
        nodes: Nodes (Slurm only).
        partition: Slurm partition (Slurm only).
        time: Slurm time limit, e.g. ``"1:00:00"`` (Slurm only).
        name: Run name (default: the script's file name without ``.py``).
        root: Run root (default: ``$LIGHTNING_LAB_ROOT`` or ``./lab_runs``).
        accelerator: ``"auto"``, ``"cpu"`` or ``"cuda"`` — decides whether Slurm asks for GPUs.
        python: The interpreter the workers run.
        env: Extra environment variables for the workers.
    """

    script: Path
    args: list[str] = field(default_factory=list)
    backend: str = "local"
    devices: int = 1
    nodes: int = 1
    partition: str | None = None
    time: str | None = None
    name: str | None = None
    root: str | None = None
    accelerator: str = "auto"
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.script = Path(self.script).expanduser().resolve()
        self.args = list(self.args)
        if self.backend not in BACKENDS:
            raise ConfigurationError(f"--backend {self.backend!r} is not one of {', '.join(BACKENDS)}.")
        for option, value in (("--devices", self.devices), ("--nodes", self.nodes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{option} must be a positive integer, got {value!r}.")
        if self.backend == "local" and self.nodes > 1:
            raise ConfigurationError(
                f"--nodes {self.nodes} needs a cluster: use --backend slurm (the local backend runs on this machine)."
            )
        if self.backend == "local" and (self.partition or self.time):
            raise ConfigurationError("--partition and --time are Slurm options; add --backend slurm.")
        if not self.script.is_file():
            raise ConfigurationError(f"script {str(self.script)!r} does not exist.")
        if self.script.suffix != ".py":
            raise ConfigurationError(f"script {self.script.name!r} is not a Python file (.py).")

    @property
    def run_name(self) -> str:
        """The run's name: ``name`` or the script's stem."""
        return self.name or self.script.stem

    @property
    def world_size(self) -> int:
        """Processes in all: nodes × devices."""
        return self.nodes * self.devices
