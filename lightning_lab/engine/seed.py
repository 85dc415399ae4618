"""Seeding and capturing every random number generator (python, numpy, torch, cuda)."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from lightning_lab.errors import ConfigurationError

_MAX_SEED = 2**32 - 1


def seed_everything(seed: int) -> int:
    """Seed python's ``random``, numpy and torch (all CUDA devices too); returns the seed.

    The seed is also exported as ``LIGHTNING_LAB_SEED`` so worker processes can derive theirs.

    Raises:
        ConfigurationError: ``seed`` is not an integer in ``[0, 2**32 - 1]``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= _MAX_SEED:
        raise ConfigurationError(f"seed must be an integer between 0 and {_MAX_SEED}, got {seed!r}.")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["LIGHTNING_LAB_SEED"] = str(seed)
    return seed


def fresh_seed() -> int:
    """A seed drawn from the OS (used for the shuffling order when the user gave none)."""
    return int.from_bytes(os.urandom(4), "little")


def capture_rng_state() -> dict[str, Any]:
    """Every generator's state, in types that ``torch.load(weights_only=True)`` accepts."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        # np.fromiter reads the 625-int tuple about 5x faster than torch.tensor does.
        "python": {"version": version, "state": torch.from_numpy(np.fromiter(internal, np.int64, len(internal))),
                   "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` returned."""
    py = state["python"]
    internal = py["state"].tolist() if isinstance(py["state"], torch.Tensor) else py["state"]
    random.setstate((py["version"], tuple(internal), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
