"""What a checkpoint holds, how the trainer's loop position is kept, and how both come back."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lightning_lab.engine.engine import read_checkpoint
from lightning_lab.engine.seed import capture_rng_state
from lightning_lab.errors import CheckpointError

if TYPE_CHECKING:
    from lightning_lab.engine.trainer import Trainer

FORMAT = "lightning_lab.checkpoint"
FORMAT_VERSION = 1


@dataclass
class LoopState:
    """Where training stands. ``batches_done`` counts batches of ``epoch`` fully processed
    (step, hooks, any validation they triggered); ``validated_at`` is the value of
    ``batches_done`` when validation last ran in this epoch (-1: not yet)."""

    epoch: int = 0
    global_step: int = 0
    batches_done: int = 0
    validated_at: int = -1
    epoch_end_done: bool = False

    def to_checkpoint(self) -> dict[str, Any]:
        """The position a resume starts from (an epoch whose end ran counts as finished)."""
        if self.epoch_end_done:
            return asdict(LoopState(self.epoch + 1, self.global_step))
        return asdict(self)


def versions() -> dict[str, str]:
    """Versions of what produced a checkpoint or run."""
    from lightning_lab import __version__

    return {"lightning_lab": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


def plain(value: Any) -> Any:
    """``value`` in types that JSON and ``weights_only`` loading both accept (others become repr)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def build_checkpoint(trainer: Trainer, epoch_totals: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything needed to continue exactly: weights, optimizer, schedulers, scaler, loop
    position, open epoch metrics (``epoch_totals``, one entry per rank), callback states, RNG
    states, shuffling seed, run position."""
    module = trainer.module
    checkpoint: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": versions(),
        "state_dict": module.state_dict(),
        "optimizer": trainer.optimizer.state_dict() if trainer.optimizer is not None else None,
        "lr_schedulers": [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs],
        "precision": trainer.engine.precision.state_dict(),
        "loop": trainer._loop.to_checkpoint(),
        "epoch_metrics": epoch_totals,
        "callbacks": {cb.state_key: cb.state_dict() for cb in trainer.callbacks},
        "rng": capture_rng_state(),
        "shuffle_seed": trainer._shuffle_seed,
        "hparams": plain(dict(module.hparams)),
        "run": trainer._run_position(),
    }
    if trainer.datamodule is not None:
        checkpoint["datamodule"] = trainer.datamodule.state_dict()
    module.on_save_checkpoint(checkpoint)
    return checkpoint


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a lightning_lab checkpoint safely and check that it is one.

    Raises:
        CheckpointError: missing, truncated, unsafe, or not written by lightning_lab.
    """
    data = read_checkpoint(path, map_location=map_location)
    if data.get("format") != FORMAT:
        keys = sorted(map(str, data))[:8]
        raise CheckpointError(
            f"{path} is not a lightning_lab checkpoint (its keys are {keys}). To load bare weights, use "
            "model.load_state_dict(torch.load(path, weights_only=True)); to resume training, pass a "
            "last.ckpt or best-*.ckpt written by a Trainer."
        )
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer lightning_lab ({data.get('versions', {}).get('lightning_lab')}); "
            "upgrade to load it."
        )
    return data


def load_weights(module: torch.nn.Module, checkpoint: dict[str, Any], path: str | Path) -> None:
    """Load the checkpoint's weights into ``module``, with an error that lists what does not match."""
    try:
        result = module.load_state_dict(checkpoint["state_dict"], strict=False)
    except RuntimeError as err:  # shape mismatches
        lines = [line.strip() for line in str(err).strip().splitlines()[1:] if line.strip()]
        detail = " ".join(lines[:3]) + (f" (and {len(lines) - 3} more)" if len(lines) > 3 else "")
        saved = checkpoint.get("hparams") or {}
        hint = f" The checkpoint was saved with hparams {saved}." if saved else ""
        raise CheckpointError(
            f"{path} does not fit {type(module).__name__}: {detail or str(err).strip()} Was it saved from a "
            f"different model?{hint}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not fit {type(module).__name__}: missing {result.missing_keys[:5]}, unexpected "
            f"{result.unexpected_keys[:5]}. Was it saved from a different model?"
        )
