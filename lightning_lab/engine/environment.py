"""Where this process sits in a job: alone, under torchrun, or as a Slurm task."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterEnvironment:
    """Rank and rendezvous facts read from the launcher's environment variables."""

    kind: str = "single"  # "single" | "torchrun" | "slurm"
    world_size: int = 1
    global_rank: int = 0
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1


def detect_environment(env: dict[str, str] | None = None) -> ClusterEnvironment:
    """Read the environment: torchrun's variables win, then Slurm's (one task per process)."""
    env = dict(os.environ) if env is None else env
    if "TORCHELASTIC_RUN_ID" in env or all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        world = int(env.get("WORLD_SIZE", "1"))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
        return ClusterEnvironment(
            kind="torchrun",
            world_size=world,
            global_rank=int(env.get("RANK", "0")),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            local_world_size=local_world,
            node_rank=int(env.get("GROUP_RANK", env.get("NODE_RANK", "0"))),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", "29500")),
        )
    ntasks = int(env.get("SLURM_NTASKS", "1") or 1)
    if ntasks > 1 and "SLURM_PROCID" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        nodes = expand_hostlist(env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "127.0.0.1")))
        job_id = int(env.get("SLURM_JOB_ID", "0") or 0)
        return ClusterEnvironment(
            kind="slurm",
            world_size=ntasks,
            global_rank=int(env["SLURM_PROCID"]),
            local_rank=int(env.get("SLURM_LOCALID", "0")),
            local_world_size=int(env.get("SLURM_NTASKS_PER_NODE", str(ntasks)).split("(")[0]),
            node_rank=int(env.get("SLURM_NODEID", "0")),
            master_addr=env.get("MASTER_ADDR", nodes[0] if nodes else "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", str(15000 + job_id % 20000))),
        )
    return ClusterEnvironment()


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand Slurm's compressed host list: ``"n[1-3,7],gpu01"`` → ``["n1", "n2", "n3", "n7", "gpu01"]``."""
    hosts: list[str] = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", hostlist):
        if plain:
            hosts.append(plain)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not hi:
                hosts.append(prefix + lo)
                continue
            width = len(lo)
            hosts.extend(f"{prefix}{i:0{width}d}" for i in range(int(lo), int(hi) + 1))
    return hosts
