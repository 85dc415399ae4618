"""The IPython magics: ``%%train`` (train the cell's model), ``%runs`` (the runs table) and ``%export``."""

from __future__ import annotations

import sys
import threading
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from lightning_lab.errors import LabError
from lightning_lab.notebook.discovery import assigned_names, find_data, find_model


def _interval(text: str) -> int | float:
    """``--val-check-interval``: ``0.5`` is a fraction of an epoch, ``50`` a number of batches."""
    return float(text) if any(c in text for c in ".eE") else int(text)


@magics_class
class LabMagics(Magics):
    """``%%train``, ``%runs`` and ``%export``; loaded with ``%load_ext lightning_lab``."""

    @magic_arguments()
    @argument("--max-epochs", type=int, default=None, help="epochs to train (default: until max-steps, else 1000)")
    @argument("--max-steps", type=int, default=-1, help="optimizer steps to train (default: no limit)")
    @argument("--devices", default="auto", help="devices (processes) to train on (default: auto)")
    @argument("--accelerator", default="auto", help="auto, cpu or cuda (default: auto)")
    @argument("--precision", default="32-true", help="32-true, bf16-mixed or 16-mixed (default: 32-true)")
    @argument("--val-check-interval", type=_interval, default=1.0,
              help="validate every fraction of an epoch (0.5) or every N batches (50)")
    @argument("--accumulate", type=int, default=1, help="batches per optimizer step (default: 1)")
    @argument("--clip", type=float, default=None, help="clip gradients to this total norm")
    @argument("--seed", type=int, default=None, help="seed every RNG before the cell runs (reproducible init)")
    @argument("--name", default=None, help="run name (default: the model's class name)")
    @argument("--root", default=None, help="run root (default: $LIGHTNING_LAB_ROOT or ./lab_runs)")
    @argument("--resume", action="store_true", help="continue the last run of this name from its last.ckpt")
    @argument("--backend", default="inprocess", choices=("inprocess", "local", "slurm"),
              help="where to train: in this kernel (default; --devices N > 1 means local), local worker "
                   "processes, or a Slurm job — the cell is exported and launched, metrics stream back")
    @argument("--nodes", type=int, default=1, help="nodes, with --backend slurm")
    @argument("--partition", default=None, help="Slurm partition, with --backend slurm")
    @argument("--time", default=None, help="Slurm time limit, with --backend slurm")
    @argument("--model", default=None, help="the variable holding the LabModule to train")
    @argument("--data", default=None, help="the variable holding the LabDataModule or training DataLoader")
    @argument("--val", default=None, help="the variable holding the validation DataLoader")
    @argument("--no-widget", action="store_true", help="text progress instead of the live widget")
    @argument("--background", action="store_true",
              help="train on a background thread: the cell returns at once and the notebook stays usable")
    @argument("--profile", action="store_true",
              help="run torch.profiler over a few batches: Chrome trace in the run directory, top operators shown")
    @argument("--find-lr", action="store_true",
              help="instead of training, sweep the learning rate: plot loss vs rate and suggest one")
    @cell_magic
    def train(self, line: str, cell: str) -> None:
        """Run the cell, then train the model it defines with the lightning_lab Trainer.

        Afterwards the trained model is in the namespace and ``_run`` holds the run. Interrupt the
        kernel (or press the widget's Stop button, or create a ``STOP`` file in the run directory)
        to stop after the current step; ``last.ckpt`` is saved and ``--resume`` continues.
        """
        try:
            args = parse_argstring(self.train, line)
        except Exception as err:  # argparse errors and UsageError: one line, no traceback
            print(f"%%train: {err}", file=sys.stderr)
            return
        try:
            from lightning_lab.notebook.remote import train_remote, wants_processes

            if wants_processes(args):  # --devices N / --backend local|slurm: fresh processes, not this kernel
                if args.profile or args.find_lr:
                    raise LabError("--profile and --find-lr run in this kernel: drop --devices/--backend for them.")
                train_remote(self.shell, args, line, cell)
            else:
                self._train(args, cell)
        except LabError as err:
            print(f"%%train: {err}", file=sys.stderr)

    def _train(self, args: Any, cell: str) -> None:
        from lightning_lab.engine.seed import seed_everything
        from lightning_lab.engine.trainer import Trainer
        from lightning_lab.notebook.session import NotebookProgress, widget_available

        ns = self.shell.user_ns
        if args.seed is not None:
            seed_everything(args.seed)  # before the body: the model's initial weights are reproducible
        source = self.shell.transform_cell(cell)
        result = self.shell.run_cell(source, store_history=False, silent=False)
        if not result.success:
            return  # the body's own error was already shown
        body_names = assigned_names(source)
        model_name, model = find_model(ns, body_names, args.model)
        data = find_data(ns, body_names, args.data, args.val)
        if args.find_lr:
            _find_lr(ns, model_name, model, data, args)
            return
        widget = not args.no_widget and widget_available()
        progress = NotebookProgress(background=args.background) if widget else "lines"
        trainer = Trainer(
            max_epochs=args.max_epochs, max_steps=args.max_steps, accelerator=args.accelerator,
            devices=1, precision=args.precision, accumulate_grad_batches=args.accumulate,
            gradient_clip_val=args.clip, val_check_interval=args.val_check_interval, seed=args.seed,
            name=args.name, root_dir=args.root, progress=progress, profile=args.profile,
        )
        trainer._recorder.source = _notebook_source(ns, model_name, data["names"])
        trainer._recorder.source_files = {"cells.py": _cells_text(ns, cell)}
        fit = lambda: trainer.fit(  # noqa: E731
            model, data.get("train"), data.get("val"), datamodule=data.get("datamodule"),
            ckpt_path="last" if args.resume else None,
        )
        ns["_trainer"] = trainer
        if widget:
            progress.show(trainer)
        if args.background:
            thread = threading.Thread(target=_fit_in_background, args=(fit, trainer, ns), daemon=True,
                                      name="lightning_lab-train")
            ns["_training_thread"] = thread
            thread.start()
            return
        try:
            fit()
        finally:
            if trainer.run is not None:
                ns["_run"] = trainer.run
            if not widget:
                from lightning_lab.notebook.session import show_final_curves

                show_final_curves(trainer)

    @magic_arguments()
    @argument("name", nargs="?", default=None, help="only runs of this name")
    @argument("--metric", default=None, help="metric to overlay across runs (default: val_loss or the first shared one)")
    @argument("--root", default=None, help="run root (default: $LIGHTNING_LAB_ROOT or ./lab_runs)")
    @line_magic
    def runs(self, line: str) -> None:
        """A table of runs (name, id, status, duration, final metrics) and an overlay plot of one metric."""
        from lightning_lab.notebook.session import show_runs

        try:
            args = parse_argstring(self.runs, line)
            show_runs(args.root, args.name, args.metric)
        except LabError as err:
            print(f"%runs: {err}", file=sys.stderr)
        except Exception as err:
            if type(err).__name__ != "UsageError":
                raise
            print(f"%runs: {err}", file=sys.stderr)

    @line_magic
    def export(self, line: str) -> None:
        """``%export [SCRIPT] [--cell N]``: export this notebook (as last saved) to a training script."""
        from lightning_lab.export import magic_export

        magic_export(line)


def _find_lr(ns: dict[str, Any], model_name: str, model: Any, data: dict[str, Any], args: Any) -> None:
    """``%%train --find-lr``: the sweep's plot and suggestion in the cell; ``_lr_find`` holds the result."""
    from IPython.display import Image, display

    from lightning_lab.engine.trainer import Trainer

    trainer = Trainer(accelerator=args.accelerator, precision=args.precision, progress=False, seed=args.seed)
    result = trainer.find_lr(model, data.get("train"), datamodule=data.get("datamodule"))
    ns["_lr_find"] = result
    display(Image(data=result.png(), format="png"))
    if result.suggestion is None:
        print("%%train --find-lr: the sweep was too short to suggest a rate; see the plot (_lr_find).")
        return
    print(f"suggested learning rate: {result.suggestion:.3g} (steepest descent of the loss; "
          f"{model_name}'s weights are unchanged). Use it in configure_optimizers, then run %%train "
          "without --find-lr.")


def _fit_in_background(fit: Any, trainer: Any, ns: dict[str, Any]) -> None:
    try:
        fit()
    except LabError as err:
        print(f"%%train: {err}", file=sys.stderr)
    except BaseException as err:  # shown in the cell's output; the run records it as failed
        print(f"%%train: training failed: {type(err).__name__}: {err}", file=sys.stderr)
    finally:
        if trainer.run is not None:
            ns["_run"] = trainer.run


def _notebook_source(ns: dict[str, Any], model_name: str, data_names: tuple[str, ...]) -> dict[str, Any]:
    import os

    return {"kind": "notebook", "notebook": os.environ.get("JPY_SESSION_NAME"), "model": model_name,
            "data": list(data_names), "cells": "source/cells.py"}


def _cells_text(ns: dict[str, Any], cell: str) -> str:
    """The code cells run so far in this kernel, then the %%train cell: what the run came from."""
    history = [c for c in ns.get("In", [])[1:] if c.strip() and "run_cell_magic('train'" not in c]
    parts = [f"# In[{i}]\n{c.rstrip()}\n" for i, c in enumerate(history, start=1)]
    parts.append(f"# %%train cell\n{cell.rstrip()}\n")
    return "\n".join(parts)

