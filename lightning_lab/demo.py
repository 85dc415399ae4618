"""The demo: train the digits example on real data, then say where the run is and how it ended."""

from __future__ import annotations

from pathlib import Path

from lightning_lab.engine.trainer import Trainer
from lightning_lab.examples.digits import DigitsClassifier, DigitsData


def run_demo(max_epochs: int = 10, root: str | Path | None = None, seed: int = 0) -> None:
    """Train :class:`DigitsClassifier` on sklearn's digits and print the run directory and final metrics."""
    trainer = Trainer(max_epochs=max_epochs, seed=seed, root_dir=root, name="digits")
    model = DigitsClassifier()
    trainer.fit(model, datamodule=DigitsData())
    run = trainer.run
    print()
    print(f"run:        {run.path}")
    print(f"status:     {run.status}  ({run.duration:.1f} s, {trainer.global_step} steps)")
    for key in ("val_acc", "val_loss", "train_loss"):
        if key in run.final:
            print(f"{key + ':':<12}{run.final[key]:.4f}")
    print(f"checkpoint: {run.last_checkpoint}")
    print(f"list runs:  lightning-lab runs --root {run.path.parent.parent}")
