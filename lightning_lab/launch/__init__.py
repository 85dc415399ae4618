"""Launch backends: the same training script on several local processes or on Slurm.

``lightning-lab run SCRIPT --backend local|slurm`` and ``%%train --devices N`` come here. Every
backend prepares the run directory first (:mod:`lightning_lab.launch.rundir`), starts the engine
in fresh processes (never a fork of the caller), follows the run through its ``metrics.jsonl``
(:mod:`lightning_lab.launch.follow`) and records how it ended. Importing this package is light;
torch's launcher and the Slurm tools are used only when a run starts.
"""

from __future__ import annotations

from lightning_lab.launch.spec import BACKENDS, LaunchSpec

__all__ = ["BACKENDS", "LaunchSpec"]
