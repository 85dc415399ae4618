"""Trainer: the fit / validate / test / predict loops, with every hook named where it fires."""

from __future__ import annotations

import itertools
import math
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lightning_lab.callbacks.base import Callback
from lightning_lab.engine.advice import Setup
from lightning_lab.engine.checkpoint import LoopState, build_checkpoint, load_checkpoint, load_weights
from lightning_lab.engine.data import batch_size_of, iterate, loader_length, move_to_device, prepare_loader
from lightning_lab.engine.engine import BackgroundCheckpointWriter, Engine
from lightning_lab.engine.metrics import MetricCollector
from lightning_lab.engine.module import LabDataModule, LabModule, is_overridden
from lightning_lab.engine.optim import SchedulerConfig, parse_optimizers
from lightning_lab.engine.options import (
    as_list,
    batch_limit,
    check_interval,
    check_limit,
    check_positive,
    default_callbacks,
)
from lightning_lab.engine.precision import Precision
from lightning_lab.engine.preemption import preemptible, requeue_after_preemption, requeued_checkpoint
from lightning_lab.engine.profiling import Profiler
from lightning_lab.engine.recording import RunRecorder
from lightning_lab.engine.seed import fresh_seed, restore_rng_state, seed_everything
from lightning_lab.engine.stopping import StopRequests
from lightning_lab.engine.timing import StepTimer, setup_of, time_allreduce
from lightning_lab.errors import CheckpointError, ConfigurationError, LabError, NonFiniteError, UserCodeError
from lightning_lab.runs.insight import Insight

if TYPE_CHECKING:
    from lightning_lab.engine.lr_finder import LRFinderResult

_END = object()
_AGREE_EVERY = 8  # under DDP, optimizer steps between two agreements on a stop request
_NO_SYNC = nullcontext()


class Trainer:
    """Trains a :class:`LabModule`; records the run in a run directory; saves exact checkpoints.

    Args mirror Lightning's (see SPEC "Public Python API"). Highlights:
        max_epochs / max_steps: stop after whichever comes first (neither: 1000 epochs).
        val_check_interval: a fraction of an epoch (float) or a number of batches (int).
        accumulate_grad_batches: micro-batches per optimizer step (no DDP sync in between).
        seed: seeds python, numpy and torch now, and fixes the shuffling order.
        root_dir / name: the run directory is ``<root_dir>/<name>/<run id>/``.
        progress: ``"auto"`` (a bar on a terminal, periodic lines otherwise), ``"bar"``,
            ``"lines"``, ``False``, or a Callback that draws progress itself.
        profile: run torch.profiler over a few batches after warm-up; the Chrome trace goes to
            ``<run dir>/profile/trace.json`` and the top operators into :attr:`insight`.

    Every fit measures where each batch's time goes (data wait, transfer, forward+backward,
    optimizer, framework) and leaves the summary, with advice, in :attr:`insight` and
    ``run.json["insight"]``; :meth:`find_lr` sweeps the learning rate.

    Example::

        trainer = Trainer(max_epochs=5, seed=0)
        trainer.fit(model, train_loader, val_loader)
        print(trainer.callback_metrics["val_loss"], trainer.run.path)
    """

    def __init__(
        self,
        max_epochs: int | None = None,
        max_steps: int = -1,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        num_nodes: int = 1,
        strategy: str = "auto",
        precision: str | int = "32-true",
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        val_check_interval: int | float = 1.0,
        check_val_every_n_epoch: int = 1,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        fast_dev_run: bool | int = False,
        deterministic: bool = False,
        seed: int | None = None,
        callbacks: Sequence[Callback] | Callback | None = None,
        loggers: Sequence[Any] | Any | None = None,
        root_dir: str | Path | None = None,
        name: str | None = None,
        enable_checkpointing: bool = True,
        log_every_n_steps: int = 1,
        detect_anomaly: bool = False,
        progress: str | bool | Callback = "auto",
        profile: bool = False,
    ) -> None:
        check_positive("accumulate_grad_batches", accumulate_grad_batches)
        check_positive("check_val_every_n_epoch", check_val_every_n_epoch)
        check_positive("log_every_n_steps", log_every_n_steps)
        check_interval(val_check_interval)
        for option, value in (("limit_train_batches", limit_train_batches), ("limit_val_batches", limit_val_batches),
                              ("limit_test_batches", limit_test_batches),
                              ("limit_predict_batches", limit_predict_batches)):
            check_limit(option, value)
        if max_epochs is not None and (isinstance(max_epochs, bool) or not isinstance(max_epochs, int)
                                       or max_epochs < 0):
            raise ConfigurationError(f"max_epochs must be a non-negative integer or None, got {max_epochs!r}.")
        if not isinstance(max_steps, int) or max_steps < -1:
            raise ConfigurationError(f"max_steps must be -1 (no limit) or a non-negative integer, got {max_steps!r}.")
        if gradient_clip_val is not None and not gradient_clip_val > 0:
            raise ConfigurationError(f"gradient_clip_val must be positive or None, got {gradient_clip_val!r}.")
        if fast_dev_run:
            n = 1 if fast_dev_run is True else int(fast_dev_run)
            max_epochs, max_steps = 1, n
            limit_train_batches = limit_val_batches = limit_test_batches = limit_predict_batches = n
            val_check_interval, enable_checkpointing = 1.0, False
        if max_epochs is None and max_steps == -1:
            max_epochs = 1000
        self.seed = seed_everything(seed) if seed is not None else None
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self.engine = Engine(accelerator, devices, num_nodes, strategy, precision)
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val = gradient_clip_val
        self.val_check_interval = val_check_interval
        self.check_val_every_n_epoch = check_val_every_n_epoch
        self.limits = {"train": limit_train_batches, "validate": limit_val_batches,
                       "test": limit_test_batches, "predict": limit_predict_batches}
        self.log_every_n_steps = log_every_n_steps
        self.detect_anomaly = detect_anomaly
        self.name = name
        self.root_dir = root_dir
        self.callbacks: list[Callback] = default_callbacks(callbacks, enable_checkpointing, progress,
                                                            self.engine.is_global_zero)
        if profile and not any(isinstance(c, Profiler) for c in self.callbacks):
            self.callbacks.insert(0, Profiler())  # first: its result is in the insight the others show
        self.loggers: list[Any] = [] if loggers is None else list(loggers) if isinstance(loggers, Sequence) else [loggers]
        self.config: dict[str, Any] = {
            "max_epochs": max_epochs, "max_steps": max_steps, "accelerator": self.engine.accelerator,
            "devices": self.engine.devices, "num_nodes": num_nodes, "strategy": self.engine.strategy,
            "precision": self.engine.precision.name, "accumulate_grad_batches": accumulate_grad_batches,
            "gradient_clip_val": gradient_clip_val, "val_check_interval": val_check_interval,
            "check_val_every_n_epoch": check_val_every_n_epoch, "limit_train_batches": limit_train_batches,
            "limit_val_batches": limit_val_batches, "fast_dev_run": fast_dev_run, "deterministic": deterministic,
            "seed": seed, "log_every_n_steps": log_every_n_steps, "enable_checkpointing": enable_checkpointing,
            "profile": bool(profile),
        }
        # State of the current (or last) run.
        self.state = "idle"
        self.should_stop = False
        self.module: LabModule | None = None
        self.datamodule: LabDataModule | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.lr_scheduler_configs: list[SchedulerConfig] = []
        self.num_training_batches: int | float = 0
        self._loop = LoopState()
        self._metrics = MetricCollector(reduce_mean=self._reduce_step_mean)
        self._stops = StopRequests()
        self._recorder = RunRecorder(self)
        self._checkpoint_writer = BackgroundCheckpointWriter()
        self._shuffle_seed = self.seed if self.seed is not None else 0
        self._train_loader: Any = None
        self._val_loaders: list[Any] = []
        self._forward: Any = None
        self._ddp: nn.Module | None = None
        self._grad_hooks: list[Any] = []  # time_allreduce's, removed when the fit ends
        self._micro = 0
        self._distributed = self.engine.distributed
        self._plain = False  # set per fit: see _setup_fit
        self._hooks: dict[str, list[Any]] = {}
        self._module_hooks: set[str] = set()
        self._on_cpu = self.engine.device.type == "cpu"
        self._timer = StepTimer(Setup())
        self.insight: Insight | None = None
        """Where the last fit's time went, with advice (see :class:`~lightning_lab.runs.insight.Insight`)."""

    # ------------------------------------------------------------------ public state
    @property
    def current_epoch(self) -> int:
        """The epoch being trained (0-based)."""
        return self._loop.epoch

    @property
    def global_step(self) -> int:
        """Optimizer steps taken."""
        return self._loop.global_step

    @property
    def callback_metrics(self) -> dict[str, float]:
        """Latest value of every logged metric, as plain floats."""
        return self._metrics.callback_metrics()

    def progress_metrics(self) -> dict[str, float]:
        """Latest values of the metrics logged with ``prog_bar=True``."""
        latest = self._metrics.latest
        return {k: float(v) for k, v in latest.items() if k in self._metrics.prog_bar
                or k.removesuffix("_step").removesuffix("_epoch") in self._metrics.prog_bar}

    @property
    def is_global_zero(self) -> bool:
        """Whether this process is rank 0 (the one that writes files)."""
        return self.engine.is_global_zero

    @property
    def world_size(self) -> int:
        """Number of processes training together."""
        return self.engine.world_size

    @property
    def run(self) -> Any:
        """The :class:`~lightning_lab.runs.Run` this trainer wrote (``None`` before any run)."""
        return self._recorder.run

    @property
    def run_dir(self) -> Path | None:
        """The current run's directory (``None`` before any run)."""
        return self._recorder.path

    @property
    def checkpoint_dir(self) -> Path | None:
        """``<run dir>/checkpoints``."""
        return self._recorder.path / "checkpoints" if self._recorder.path is not None else None

    def request_stop(self, reason: str = "requested") -> None:
        """Stop at the next step boundary, save ``last.ckpt`` and mark the run ``stopped``."""
        self._stops.request(reason)

    # ------------------------------------------------------------------ fit
    def fit(self, model: LabModule, train_dataloaders: Any = None, val_dataloaders: Any = None,
            datamodule: LabDataModule | None = None, ckpt_path: str | Path | None = None) -> None:
        """Train ``model``; resume from ``ckpt_path`` (a path, or ``"last"``) when given.

        Raises:
            UserCodeError: a hook returned something unusable (the message names it and the fix).
            NonFiniteError: the loss or a gradient became NaN/inf.
            CheckpointError: ``ckpt_path`` cannot be resumed from.
        """
        self._attach(model, datamodule, "fit")
        train_loader = self._loader_from("train_dataloaders", train_dataloaders, datamodule, "train_dataloader")
        if train_loader is None:
            raise ConfigurationError(
                "trainer.fit got no training data: pass train_dataloaders=DataLoader(...) or a datamodule "
                "whose train_dataloader() returns one."
            )
        val_loaders = as_list(self._loader_from("val_dataloaders", val_dataloaders, datamodule, "val_dataloader"))
        if self.engine.workers_to_start:  # devices > 1 in a plain `python script.py`: become the supervisor
            self.engine.start_workers(name=self._recorder._name_for(model), root=self.root_dir)
        if ckpt_path is None:
            ckpt_path = requeued_checkpoint()  # a requeued Slurm job continues from its last.ckpt
        checkpoint, ckpt_file = self._read_checkpoint(ckpt_path, model)
        if checkpoint is not None:  # a model mismatch fails before the checkpoint's run is reopened
            load_weights(model, checkpoint, ckpt_file)
        with self._session("fit", checkpoint, ckpt_file):
            self._setup_fit(train_loader, val_loaders, checkpoint)
            self._call("on_fit_start")
            self._call("on_train_start")
            while not self._fit_done():
                self._train_epoch()
            self.insight = self._timer.summary()  # written into run.json when the run closes
            self._call("on_train_end")
            self._call("on_fit_end")
        if self._stops.reason == "preempted":
            requeue_after_preemption(self)

    def find_lr(self, model: LabModule, train_dataloaders: Any = None, datamodule: LabDataModule | None = None,
                min_lr: float = 1e-7, max_lr: float = 1.0, num_steps: int = 100,
                early_stop_threshold: float | None = 4.0) -> LRFinderResult:
        """Sweep the learning rate exponentially from ``min_lr`` to ``max_lr`` and suggest one.

        Trains ``num_steps`` steps from the current weights (the optimizer from
        ``configure_optimizers``, its rate overridden each step), stopping early when the
        smoothed loss exceeds ``early_stop_threshold`` × its best. The weights, the optimizer's
        state, the RNG states and train/eval mode are restored afterwards; nothing is recorded.
        The suggestion is the rate where the smoothed loss falls fastest (see
        :mod:`lightning_lab.engine.lr_finder`).

        Returns:
            An :class:`~lightning_lab.engine.lr_finder.LRFinderResult`: ``.suggestion``, ``.lrs``,
            ``.losses``, ``.plot()`` (a matplotlib Figure) and ``.png()``.

        Raises:
            ConfigurationError: a bad range or step count, or no training data.

        Example::

            result = Trainer().find_lr(model, train_loader)
            print(result.suggestion)
        """
        from lightning_lab.engine.lr_finder import check_range, run_sweep

        check_range(min_lr, max_lr, num_steps, early_stop_threshold)
        if datamodule is not None and not isinstance(datamodule, LabDataModule):
            raise UserCodeError(f"datamodule must be a LabDataModule, got {type(datamodule).__name__}.")
        if datamodule is not None:
            datamodule.setup("fit")
        loader = self._loader_from("train_dataloaders", train_dataloaders, datamodule, "train_dataloader")
        if loader is None:
            raise ConfigurationError(
                "trainer.find_lr got no training data: pass train_dataloaders=DataLoader(...) or a datamodule "
                "whose train_dataloader() returns one."
            )
        return run_sweep(self, model, loader, min_lr, max_lr, num_steps, early_stop_threshold)

    def _train_epoch(self) -> None:
        loop = self._loop
        first = loop.batches_done  # > 0 when resuming mid-epoch
        if first == 0:
            self._call("on_train_epoch_start")
        elif self._validation_due(first) and loop.validated_at != first:
            self._run_validation()  # the checkpoint was taken just before this validation
        self.module.train()
        total = self.num_training_batches
        # Where the time goes (see engine/timing.py): a clock read at each phase boundary.
        timer = self._timer
        gpu = timer.gpu
        # Per-batch hooks that nothing implements are not called at all (bound once per fit).
        batch_start = "on_train_batch_start" in self._module_hooks or bool(self._callback_methods("on_train_batch_start"))
        module_end = "on_train_batch_end" in self._module_hooks
        callbacks_end = self._callback_methods("on_train_batch_end")
        val_every, val_at_end = self._validation_schedule()
        start = timer.epoch_start()  # worker start-up in iterate() is data wait too
        batches = iterate(self._train_loader, loop.epoch, skip_batches=first)
        exhausted = True
        for batch_idx in itertools.count(first):
            batch = next(batches, _END) if batch_idx < total else _END
            if batch is _END:
                break
            fetched = moved = perf_counter()
            if gpu is not None:
                gpu.mark(0)
                batch = self._to_device(batch)
                gpu.mark(1)
                moved = perf_counter()
            self._metrics.batch = batch  # on_epoch means weigh by this batch's size
            if batch_start:
                self._call("on_train_batch_start", batch, batch_idx)
            outputs = self._training_step(batch, batch_idx)
            loop.batches_done = batch_idx + 1
            if module_end:
                self._call_module("on_train_batch_end", outputs, batch, batch_idx)
            self._record_step(loop.batches_done)  # complete before callbacks (checkpoints) see the batch
            for on_batch_end in callbacks_end:
                on_batch_end(self, self.module, outputs, batch, batch_idx)
            if val_every and (loop.batches_done % val_every == 0 or (val_at_end and loop.batches_done == total)):
                paused = perf_counter()
                self._run_validation()
                timer.paused += perf_counter() - paused
            stepped = self._micro == 0
            stop = stepped and self._stop_now()
            end = perf_counter()
            start = timer.record() if timer.add(start, fetched, moved, end, stepped) else end
            if stop:
                exhausted = loop.batches_done >= total
                break
        if exhausted:
            self._end_train_epoch()

    def _end_train_epoch(self) -> None:
        self._call_module("on_train_epoch_end")
        self._record_epoch("train")
        self._step_schedulers("epoch")
        self._loop.epoch_end_done = True
        self._call_callbacks("on_train_epoch_end")
        self._loop = LoopState(self._loop.epoch + 1, self._loop.global_step)

    def _training_step(self, batch: Any, batch_idx: int) -> Any:
        self._micro += 1
        boundary = self._micro == self.accumulate_grad_batches or batch_idx + 1 == self.num_training_batches
        self._metrics.hook = "training_step"
        timer = self._timer
        timer.c0 = perf_counter()
        if self._plain:  # one process, full precision: no context to enter, backward as is
            outputs = self._forward(batch, batch_idx)
            loss = self._loss_of(outputs, batch_idx)
            if self.accumulate_grad_batches > 1:
                loss = loss / self.accumulate_grad_batches
            loss.backward()
        else:
            sync = _NO_SYNC if boundary or self._ddp is None else self._ddp.no_sync()
            with sync:
                with self.engine.precision.forward_context():
                    outputs = self._forward(batch, batch_idx)
                loss = self._loss_of(outputs, batch_idx)
                if self.accumulate_grad_batches > 1:
                    loss = loss / self.accumulate_grad_batches
                self.engine.precision.backward(loss)
        gpu = timer.gpu
        if gpu is not None:
            gpu.mark(2)
        timer.c1 = timer.o1 = perf_counter()
        if timer.grads_ready_at is not None:  # DDP on gloo; under no_sync nothing was reduced
            timer.backward_done(timer.c1, reduced=boundary)
        if boundary:
            self._optimizer_step(batch_idx)
            timer.o1 = perf_counter()
        if gpu is not None:
            gpu.mark(3)
        return outputs

    def _optimizer_step(self, batch_idx: int) -> None:
        optimizer = self.optimizer
        if self._plain and self.gradient_clip_val is None:
            optimizer.step()
        else:
            precision = self.engine.precision
            if self.gradient_clip_val is not None:
                precision.unscale(optimizer)
                norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.gradient_clip_val)
                if precision.name != "16-mixed" and not torch.isfinite(norm):
                    self._raise_non_finite("gradient norm", float(norm), batch_idx)
            precision.optimizer_step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        self._micro = 0
        self._loop.global_step += 1
        if self.lr_scheduler_configs:
            self._step_schedulers("step")

    # ------------------------------------------------------------------ validate / test / predict
    def validate(self, model: LabModule, dataloaders: Any = None, datamodule: LabDataModule | None = None,
                 ckpt_path: str | Path | None = None) -> list[dict[str, float]]:
        """Run ``validation_step`` over the data; returns ``[metrics]``."""
        return self._evaluate("validate", model, dataloaders, datamodule, ckpt_path)

    def test(self, model: LabModule, dataloaders: Any = None, datamodule: LabDataModule | None = None,
             ckpt_path: str | Path | None = None) -> list[dict[str, float]]:
        """Run ``test_step`` over the data; returns ``[metrics]``."""
        return self._evaluate("test", model, dataloaders, datamodule, ckpt_path)

    def predict(self, model: LabModule, dataloaders: Any = None, datamodule: LabDataModule | None = None,
                ckpt_path: str | Path | None = None) -> list[Any]:
        """Return ``predict_step``'s output for every batch (nothing is recorded)."""
        self._attach(model, datamodule, "predict")
        loaders = as_list(self._loader_from("dataloaders", dataloaders, datamodule, "predict_dataloader"))
        self._require_data(loaders, "predict", "predict_dataloader")
        self._load_weights_for_eval(ckpt_path, model)
        self.engine.launch()
        model.to(self.engine.device)
        outputs: list[Any] = []
        for loader in self._prepare_eval(loaders):
            for batch_idx, batch in self._eval_batches(loader, "predict"):
                with self.engine.precision.forward_context():
                    outputs.append(model.predict_step(batch, batch_idx))
        self.state = "idle"
        return outputs

    def _evaluate(self, stage: str, model: LabModule, dataloaders: Any, datamodule: LabDataModule | None,
                  ckpt_path: str | Path | None) -> list[dict[str, float]]:
        hook = "validation_step" if stage == "validate" else "test_step"
        if not is_overridden(model, hook, LabModule):
            raise UserCodeError(f"trainer.{stage} needs {type(model).__name__}.{hook}(self, batch, batch_idx).")
        self._attach(model, datamodule, stage)
        method = "val_dataloader" if stage == "validate" else "test_dataloader"
        loaders = as_list(self._loader_from("dataloaders", dataloaders, datamodule, method))
        self._require_data(loaders, stage, method)
        self._load_weights_for_eval(ckpt_path, model)
        with self._session(stage, None, None):
            self._val_loaders = self._prepare_eval(loaders)
            metrics = self._run_eval_loop(stage)
        return [metrics]

    def _run_validation(self) -> None:
        self._call_callbacks("on_validation_start")
        self._run_eval_loop("validate")
        self._loop.validated_at = self._loop.batches_done
        self._call_callbacks("on_validation_end")

    def _run_eval_loop(self, stage: str) -> dict[str, float]:
        module, metrics = self.module, self._metrics
        prefix = "validation" if stage == "validate" else "test"
        step = getattr(module, f"{prefix}_step")
        several = len(self._val_loaders) > 1
        was_training = module.training
        module.eval()
        metrics.stage = stage
        self._call(f"on_{prefix}_epoch_start")
        with torch.no_grad():
            for loader_idx, loader in enumerate(self._val_loaders):
                for batch_idx, batch in self._eval_batches(loader, stage):
                    metrics.hook = f"{prefix}_step"
                    metrics.batch = batch
                    with self.engine.precision.forward_context():
                        step(batch, batch_idx, loader_idx) if several else step(batch, batch_idx)
        self._call_module(f"on_{prefix}_epoch_end")
        values = self._record_epoch(stage)
        self._call_callbacks(f"on_{prefix}_epoch_end")
        metrics.stage = "train"
        module.train(was_training)
        return values

    def _eval_batches(self, loader: Any, stage: str) -> Iterator[tuple[int, Any]]:
        limit = batch_limit(self.limits[stage], loader_length(loader))
        for batch_idx, batch in enumerate(iterate(loader, 0)):
            if batch_idx >= limit:
                break
            yield batch_idx, self._to_device(batch)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | Path, wait: bool = True) -> None:
        """Write a full checkpoint of the current state to ``path`` (atomically, from rank 0).

        With several processes every one must call it: each contributes its open epoch totals.
        With ``wait=False`` the state is snapshot now and written by a background thread (the
        run's end, and the next save, wait for it); :meth:`wait_for_checkpoints` waits too.
        """
        if self.module is None:
            raise LabError("save_checkpoint needs a model: call it during or after trainer.fit.")
        epoch_totals = self.engine.all_gather_object(self._metrics.state_dict())
        if self.is_global_zero:
            self._recorder.flush()
            self._checkpoint_writer.write(path, build_checkpoint(self, epoch_totals), to_cpu=not self._on_cpu)
            if wait:
                self._checkpoint_writer.wait()

    def wait_for_checkpoints(self) -> None:
        """Block until checkpoints being written in the background are on disk."""
        self._checkpoint_writer.wait()

    def _read_checkpoint(self, ckpt_path: str | Path | None, model: LabModule,
                         ) -> tuple[dict[str, Any] | None, Path | None]:
        if ckpt_path is None:
            return None, None
        path = self._recorder.find_checkpoint(ckpt_path, model)
        return load_checkpoint(path), path

    def _restore(self, checkpoint: dict[str, Any], path: Path) -> None:
        load_weights(self.module, checkpoint, path)
        if checkpoint.get("optimizer") is not None:
            try:
                self.optimizer.load_state_dict(checkpoint["optimizer"])
            except (ValueError, KeyError, RuntimeError) as err:
                raise CheckpointError(
                    f"{path}: the saved optimizer state does not fit the {type(self.optimizer).__name__} that "
                    f"{type(self.module).__name__}.configure_optimizers returns now ({err}). Resume with the "
                    "optimizer and parameter groups the checkpoint was trained with."
                ) from None
        for config, state in zip(self.lr_scheduler_configs, checkpoint.get("lr_schedulers", []), strict=False):
            config.scheduler.load_state_dict(state)
        self.engine.precision.load_state_dict(checkpoint.get("precision", {}))
        self._loop = LoopState(**checkpoint["loop"])
        self._metrics.load_state_dict(_epoch_totals_for(checkpoint["epoch_metrics"], self.engine))
        states = checkpoint.get("callbacks", {})
        for callback in self.callbacks:
            if callback.state_key in states:
                callback.load_state_dict(states[callback.state_key])
        self._shuffle_seed = checkpoint["shuffle_seed"]
        if self.datamodule is not None and "datamodule" in checkpoint:
            self.datamodule.load_state_dict(checkpoint["datamodule"])
        self.module.on_load_checkpoint(checkpoint)

    def _load_weights_for_eval(self, ckpt_path: str | Path | None, model: LabModule) -> None:
        if ckpt_path is not None:
            checkpoint, path = self._read_checkpoint(ckpt_path, model)
            load_weights(model, checkpoint, path)

    def _run_position(self) -> dict[str, Any]:
        return self._recorder.position()

    # ------------------------------------------------------------------ set-up
    def _attach(self, model: LabModule, datamodule: LabDataModule | None, stage: str) -> None:
        if not isinstance(model, LabModule):
            raise UserCodeError(
                f"trainer.{stage} expects a LabModule, got {type(model).__name__}. Subclass "
                "lightning_lab.LabModule (it is a torch.nn.Module) and define training_step and "
                "configure_optimizers."
            )
        if datamodule is not None and not isinstance(datamodule, LabDataModule):
            raise UserCodeError(f"datamodule must be a LabDataModule, got {type(datamodule).__name__}.")
        if datamodule is not None:
            datamodule.setup(stage)
        object.__setattr__(model, "_trainer", self)
        self.module, self.datamodule, self.state = model, datamodule, stage
        self._module_hooks = {name for name in vars(LabModule)
                              if name.startswith("on_") and is_overridden(model, name, LabModule)}
        self._on_cpu = self.engine.device.type == "cpu"
        self._metrics.owner = type(model).__name__

    def _loader_from(self, option: str, given: Any, datamodule: LabDataModule | None, method: str) -> Any:
        if given is not None and datamodule is not None:
            raise ConfigurationError(f"pass either {option} or datamodule, not both.")
        if isinstance(given, LabDataModule):
            raise ConfigurationError(f"{option} got a LabDataModule; pass it as datamodule=... instead.")
        return getattr(datamodule, method)() if datamodule is not None else given

    def _require_data(self, loaders: list[Any], stage: str, method: str) -> None:
        if not loaders:
            raise ConfigurationError(
                f"trainer.{stage} got no data: pass dataloaders=DataLoader(...) or a datamodule whose "
                f"{method}() returns one."
            )

    def _setup_fit(self, train_loader: Any, val_loaders: list[Any], checkpoint: dict[str, Any] | None) -> None:
        engine, module = self.engine, self.module
        if not is_overridden(module, "training_step", LabModule):
            raise UserCodeError(
                f"{type(module).__name__} does not define training_step(self, batch, batch_idx): add one "
                "that returns the loss tensor."
            )
        module.to(engine.device)
        self.optimizer, self.lr_scheduler_configs = parse_optimizers(module.configure_optimizers(),
                                                                     type(module).__name__)
        if checkpoint is not None:
            self._restore(checkpoint, self._recorder.checkpoint_path)
        else:
            self._loop = LoopState()
            if self.seed is None:
                self._shuffle_seed = engine.broadcast(fresh_seed())
        self._train_loader = prepare_loader(train_loader, seed=self._shuffle_seed, rank=engine.rank,
                                            world_size=engine.world_size, train=True)
        self.num_training_batches = batch_limit(self.limits["train"], loader_length(self._train_loader))
        if self.num_training_batches == 0:
            raise ConfigurationError("the training DataLoader yields no batches (empty dataset or limit_train_batches=0).")
        self._val_loaders = self._prepare_eval(val_loaders) if is_overridden(module, "validation_step", LabModule) else []
        self._check_val_interval()
        self._distributed = engine.distributed
        if self._distributed:
            self._ddp = engine.wrap_ddp(_TrainingStep(module))
            self._forward = self._ddp
        else:
            self._ddp, self._forward = None, module.training_step
        # The per-batch fast path: nothing to wrap around forward, backward or the optimizer step.
        self._plain = self._ddp is None and type(engine.precision) is Precision
        self._micro = 0
        self.should_stop = False
        self._hooks = {}
        self._timer = StepTimer(setup_of(self, self._train_loader), emit=self._recorder.log_system,
                                batch_size=lambda: batch_size_of(self._metrics.batch), device=engine.device)
        if self._ddp is not None:
            self._grad_hooks = time_allreduce(self._ddp, self._timer)
        self.insight = None
        if checkpoint is not None:
            restore_rng_state(checkpoint["rng"])

    def _prepare_eval(self, loaders: list[Any]) -> list[Any]:
        engine = self.engine
        return [prepare_loader(loader, seed=self._shuffle_seed, rank=engine.rank, world_size=engine.world_size,
                               train=False) for loader in loaders]

    def _check_val_interval(self) -> None:
        interval, total = self.val_check_interval, self.num_training_batches
        if isinstance(interval, int) and not isinstance(interval, bool) and math.isfinite(total) and interval > total:
            raise ConfigurationError(
                f"val_check_interval={interval} batches is more than the {total} training batches of an "
                "epoch. Use a smaller number, or a fraction such as 0.5."
            )
        if isinstance(interval, float) and not math.isfinite(total) and interval != 1.0:
            raise ConfigurationError(
                "val_check_interval as a fraction needs a DataLoader with a length; pass a number of batches."
            )

    @contextmanager
    def _session(self, stage: str, checkpoint: dict[str, Any] | None, ckpt_file: Path | None) -> Iterator[None]:
        """Open the run directory, watch for stop requests, and record how the run ended."""
        self.engine.launch()
        self._recorder.open(stage, self.module, checkpoint, ckpt_file)
        self._stops = StopRequests(preemptible=stage == "fit" and preemptible())
        self._stops.stop_file = self._recorder.stop_file
        if stage == "fit":
            self._stops.install()
        anomaly = torch.autograd.detect_anomaly() if self.detect_anomaly else nullcontext()
        status, error, raising = "completed", None, False
        try:
            with anomaly:
                yield
            if self._stops.reason is not None:
                status = "stopped"
                if self._stops.reason == "preempted":
                    self._recorder.add_preemption()
        except KeyboardInterrupt:
            status, raising = "stopped", True
            raise
        except BaseException as err:
            status, error, raising = "failed", _error_summary(err), True
            for callback in self.callbacks:
                callback.on_exception(self, self.module, err)
            raise
        finally:
            self._stops.uninstall()
            while self._grad_hooks:
                self._grad_hooks.pop().remove()
            late = None
            try:
                self._checkpoint_writer.wait()  # a background write still running must land first
            except CheckpointError as err:
                late = err
                if error is None:
                    status, error = "failed", _error_summary(err)
            self._recorder.close(status, self.callback_metrics, error)
            self.state = "idle"
            if status == "stopped" and stage == "fit" and self.is_global_zero and self._stops.reason != "preempted":
                print(self._resume_hint(), file=sys.stderr, flush=True)
            if late is not None and not raising:
                raise late

    def _resume_hint(self) -> str:
        name = self._recorder.name
        return (f"lightning_lab: run {name}/{self._recorder.run_id} stopped at epoch {self.current_epoch + 1}, step "
                f"{self.global_step}; last.ckpt saved. Resume with Trainer(name={name!r}, ...).fit(model, ..., "
                "ckpt_path='last').")

    # ------------------------------------------------------------------ per-step helpers
    def _call(self, hook: str, *args: Any) -> None:
        """The module's hook, then every callback's (callbacks see what the module just logged)."""
        self._call_module(hook, *args)
        self._call_callbacks(hook, *args)

    def _call_module(self, hook: str, *args: Any) -> None:
        if hook in self._module_hooks:  # LabModule's own hooks do nothing: skip them
            self._metrics.hook = hook
            getattr(self.module, hook)(*args)

    def _call_callbacks(self, hook: str, *args: Any) -> None:
        for method in self._callback_methods(hook):
            method(self, self.module, *args)

    def _callback_methods(self, hook: str) -> list[Any]:
        methods = self._hooks.get(hook)
        if methods is None:  # bind once: the hot path loops only over callbacks that use the hook
            methods = self._hooks[hook] = [getattr(cb, hook) for cb in self.callbacks if cb.uses_hook(hook)]
        return methods

    def _to_device(self, batch: Any) -> Any:
        return batch if self._on_cpu else move_to_device(batch, self.engine.device)

    def _loss_of(self, outputs: Any, batch_idx: int) -> torch.Tensor:
        metrics = self._metrics
        if outputs is metrics.logged_tensor and outputs is not None and outputs.requires_grad:  # a CPU scalar
            if not math.isfinite(metrics.logged_value):
                self._raise_non_finite("loss", metrics.logged_value, batch_idx)
            return outputs
        # A plain tensor first: the Mapping check is an ABC isinstance, slow for a per-step call.
        loss = outputs if type(outputs) is torch.Tensor else outputs.get("loss") if isinstance(
            outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and loss.requires_grad and loss.numel() == 1:
            if loss.is_cpu:  # on CUDA this check would sync every step
                value = metrics.logged_value if loss is metrics.logged_tensor else loss.item()
                if not math.isfinite(value):
                    self._raise_non_finite("loss", value, batch_idx)
            return loss
        owner = f"{type(self.module).__name__}.training_step"
        if not isinstance(loss, torch.Tensor):
            hint = " Did you forget `return loss`?" if outputs is None else ""
            what = "a dict without a 'loss' key" if isinstance(outputs, Mapping) else f"{type(outputs).__name__}"
            raise UserCodeError(f"{owner} returned {what} for batch {batch_idx}; it must return the loss tensor "
                                f"(or a dict with a 'loss' key).{hint}")
        if loss.numel() != 1:
            raise UserCodeError(f"{owner} returned a loss of shape {tuple(loss.shape)} for batch {batch_idx}; it "
                                "must be a scalar. Reduce it, e.g. `loss.mean()`.")
        raise UserCodeError(f"{owner} returned a loss that does not require grad (computed under "
                            "torch.no_grad() or detached); gradients cannot flow to the model.")

    def _raise_non_finite(self, what: str, value: float, batch_idx: int) -> None:
        culprit = "none of the parameters or gradients is non-finite yet"
        for name, param in self.module.named_parameters():
            if not torch.isfinite(param).all():
                culprit = f"first non-finite parameter: {name}"
                break
            if param.grad is not None and not torch.isfinite(param.grad).all():
                culprit = f"first non-finite gradient: {name}"
                break
        raise NonFiniteError(
            f"{type(self.module).__name__}.training_step: the {what} became {value} at global step "
            f"{self.global_step} (epoch {self.current_epoch}, batch {batch_idx}); {culprit}. Try a lower learning "
            "rate, gradient_clip_val, or check the inputs for NaN."
        )

    def _record_step(self, batches_done: int) -> None:
        metrics = self._metrics
        metrics.logged_tensor = None
        values = metrics.step_values
        if values:
            metrics.step_values = {}
            if batches_done % self.log_every_n_steps == 0:
                self._recorder.log(values)

    def _record_epoch(self, stage: str) -> dict[str, float]:
        values = self._metrics.compute_epoch(stage, self.engine.sum_metric_totals if self.engine.distributed else None)
        if values:
            self._recorder.log(values)
        return values

    def log_metrics(self, values: Mapping[str, float]) -> None:
        """Record ``values`` (a callback's own metrics) in the run and in ``callback_metrics``."""
        self._metrics.latest.update(values)
        self._recorder.log(dict(values))

    def _reduce_step_mean(self, value: torch.Tensor) -> torch.Tensor:
        return self.engine.all_reduce(value, op="mean")

    def _validation_due(self, batches_done: int) -> bool:
        every, at_end = self._validation_schedule()
        return bool(every) and (batches_done % every == 0 or (at_end and batches_done == self.num_training_batches))

    def _validation_schedule(self) -> tuple[Any, bool]:
        """This epoch's validation points: every N batches (0: none), and whether also at its last batch."""
        if not self._val_loaders or (self.current_epoch + 1) % self.check_val_every_n_epoch != 0:
            return 0, False
        interval, total = self.val_check_interval, self.num_training_batches
        if isinstance(interval, float):
            every = max(1, int(total * interval)) if math.isfinite(total) else total
        else:
            every = interval
        return every, interval == 1.0

    def _step_schedulers(self, interval: str) -> None:
        for config in self.lr_scheduler_configs:
            if config.interval != interval:
                continue
            count = self.global_step if interval == "step" else self.current_epoch + 1
            if count % config.frequency != 0:
                continue
            if config.needs_metric:
                metrics = self._metrics.latest
                if config.monitor not in metrics:
                    raise UserCodeError(
                        f"ReduceLROnPlateau monitors {config.monitor!r}, which was never logged. Logged metrics: "
                        f"{sorted(metrics)}. Log it with self.log({config.monitor!r}, ...) or change monitor."
                    )
                config.scheduler.step(float(metrics[config.monitor]))
            else:
                config.scheduler.step()

    def _stop_now(self, boundary: bool = False) -> bool:
        step = self._loop.global_step
        if self.max_steps >= 0 and step >= self.max_steps:
            return True
        if self._distributed:
            # Every rank must stop at the same step, or the others hang in the next collective: the
            # ranks agree (one small all-reduce) every _AGREE_EVERY steps and at epoch boundaries.
            if boundary or step % _AGREE_EVERY == 0:
                return self.should_stop or self._stops.agree(self.engine) is not None
            return self.should_stop
        return self.should_stop or self._stops.requested() is not None

    def _fit_done(self) -> bool:
        if self._stop_now(boundary=True):
            return True
        return self.max_epochs is not None and self.current_epoch >= self.max_epochs


class _TrainingStep(nn.Module):
    """Routes DDP's forward to ``training_step`` so gradient sync hooks see the real computation."""

    def __init__(self, module: LabModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch: Any, batch_idx: int) -> Any:
        return self.module.training_step(batch, batch_idx)


def _epoch_totals_for(saved: list[dict[str, Any]], engine: Engine) -> dict[str, Any]:
    """This rank's open epoch totals; after a change of world size rank 0 takes them all."""
    if len(saved) == engine.world_size:
        return saved[engine.rank]
    if not engine.is_global_zero:
        return {}
    merged: dict[str, list[float]] = {}
    for totals in saved:
        for name, (total, weight) in totals.items():
            previous = merged.get(name, [0.0, 0.0])
            merged[name] = [previous[0] + total, previous[1] + weight]
    return merged


def _error_summary(err: BaseException) -> dict[str, Any]:
    frames = traceback.format_exception(type(err), err, err.__traceback__)
    return {"type": type(err).__name__, "message": str(err), "traceback": "".join(frames)[-4000:]}
