"""Exact resume: a run interrupted at any step and resumed from its checkpoint ends exactly where
the uninterrupted run ends (same weights, same metrics.jsonl), in the same run directory.

SPEC "Checkpoints": resuming from a checkpoint taken at any step (also mid-epoch) reproduces the
uninterrupted run exactly on CPU with ``deterministic=True``.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_lab import LabModule, Trainer
from lightning_lab.callbacks import Callback
from lightning_lab.errors import CheckpointError
from lightning_lab.runs import list_runs, load_run

SEED = 1234
N_TRAIN, BATCH = 38, 5  # 8 batches per epoch, the last one holds 3 samples (weighting matters)
BATCHES_PER_EPOCH = 8
MAX_EPOCHS = 3

_gen = torch.Generator().manual_seed(0)
X = torch.randn(N_TRAIN, 4, generator=_gen)
Y = X @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(N_TRAIN, 1, generator=_gen)
X_VAL = torch.randn(12, 4, generator=_gen)
Y_VAL = X_VAL @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


class DropoutRegressor(LabModule):
    """Dropout (the RNG stream matters), SGD with momentum, a per-step StepLR."""

    def __init__(self, lr: float = 0.05, hidden: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        pred = self.net(x)
        loss = F.mse_loss(pred, y)
        self.log("train_loss", loss)  # per step
        self.log("train_mae", (pred - y).abs().mean(), on_step=False, on_epoch=True)  # open epoch accumulator
        self.log("train_max", (pred - y).abs().max(), on_epoch=True)  # both: _step and _epoch
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.8)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class NoisyDataset(Dataset):
    """Random augmentation drawn from the global torch RNG while loading (num_workers=0)."""

    def __len__(self) -> int:
        return N_TRAIN

    def __getitem__(self, index: int):
        return X[index] + 0.05 * torch.randn(4), Y[index]


def make_model() -> DropoutRegressor:
    torch.manual_seed(0)  # same initial weights for every run (a resume overwrites them anyway)
    return DropoutRegressor()


def loaders(noisy: bool = False, workers: int = 0) -> tuple[DataLoader, DataLoader]:
    train = NoisyDataset() if noisy else TensorDataset(X, Y)
    return (
        DataLoader(train, batch_size=BATCH, shuffle=True, num_workers=workers),
        DataLoader(TensorDataset(X_VAL, Y_VAL), batch_size=5),
    )


def fit(
    root: Path,
    name: str,
    *,
    max_steps: int = -1,
    ckpt_path=None,
    accumulate: int = 1,
    noisy: bool = False,
    callbacks=None,
    workers: int = 0,
) -> tuple[Trainer, DropoutRegressor]:
    model = make_model()
    trainer = Trainer(
        seed=SEED,
        deterministic=True,
        max_epochs=MAX_EPOCHS,
        max_steps=max_steps,
        root_dir=root,
        name=name,
        progress=False,
        val_check_interval=0.5,
        accumulate_grad_batches=accumulate,
        callbacks=callbacks,
    )
    trainer.fit(model, *loaders(noisy, workers), ckpt_path=ckpt_path)
    return trainer, model


def records(run_dir: Path) -> list[dict]:
    """The logged training records without wall-clock fields: the time, and the engine's ``sys/...``
    timing records (written about once a second, so their number and values differ run to run)."""
    return [{k: v for k, v in record.items() if k != "time"} for record in load_run(run_dir).metrics
            if not any(k.startswith("sys/") for k in record)]


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), f"{key} differs after resume"


def assert_exact_resume(
    full: tuple[Trainer, nn.Module], resumed: tuple[Trainer, nn.Module], interrupted: Trainer
) -> None:
    (ta, ma), (tb, mb) = full, resumed
    assert_same_weights(ma, mb)
    assert tb.global_step == ta.global_step
    assert tb.current_epoch == ta.current_epoch
    # One continuous run directory: the resumed fit continued the interrupted one's folder.
    assert tb.run_dir == interrupted.run_dir
    assert [r.path for r in list_runs(tb.run_dir.parent.parent, name=tb.run_dir.parent.name)] == [tb.run_dir]
    run = load_run(tb.run_dir)
    assert run.status == "completed"
    assert len(run.info["resumes"]) == 1
    assert records(tb.run_dir) == records(ta.run_dir)
    assert tb.callback_metrics == ta.callback_metrics


def test_uninterrupted_run_logs_what_the_resume_tests_compare(tmp_path):
    """Guards the other tests: the reference run really has dropout noise, validations and epoch means."""
    trainer, _ = fit(tmp_path, "a")
    recs = records(trainer.run_dir)
    assert trainer.global_step == MAX_EPOCHS * BATCHES_PER_EPOCH
    assert sum("train_loss" in r for r in recs) == MAX_EPOCHS * BATCHES_PER_EPOCH
    assert sum("val_loss" in r for r in recs) == 2 * MAX_EPOCHS  # val_check_interval=0.5
    assert sum("train_mae" in r for r in recs) == MAX_EPOCHS
    assert sum("train_max_epoch" in r for r in recs) == MAX_EPOCHS
    # Epoch values are the means of the step values weighted by the training batch sizes (7 x 5, 1 x 3).
    weights = [BATCH] * (BATCHES_PER_EPOCH - 1) + [N_TRAIN - BATCH * (BATCHES_PER_EPOCH - 1)]
    steps = [r["train_max_step"] for r in recs if "train_max_step" in r][:BATCHES_PER_EPOCH]
    epoch0 = next(r["train_max_epoch"] for r in recs if "train_max_epoch" in r)
    assert epoch0 == pytest.approx(
        sum(w * v for w, v in zip(weights, steps, strict=True)) / sum(weights), rel=1e-12
    )
    # Two runs with the same seed agree; a different seed does not (so equality below means something).
    again, _ = fit(tmp_path, "a2")
    assert records(again.run_dir) == recs
    other = Trainer(
        seed=SEED + 1,
        deterministic=True,
        max_epochs=1,
        root_dir=tmp_path,
        name="c",
        progress=False,
        val_check_interval=0.5,
    )
    other.fit(make_model(), *loaders())
    assert records(other.run_dir)[0] != recs[0]


@pytest.mark.parametrize(
    "k",
    [
        pytest.param(3, id="mid-epoch"),
        pytest.param(4, id="on-a-validation-point"),
        pytest.param(8, id="last-batch-of-epoch"),
        pytest.param(13, id="mid-second-epoch"),
        pytest.param(20, id="validation-point-third-epoch"),
    ],
)
def test_resume_reproduces_uninterrupted_run(tmp_path, k):
    full = fit(tmp_path, "a")
    interrupted, _ = fit(tmp_path, "b", max_steps=k)
    assert interrupted.global_step == k
    assert load_run(interrupted.run_dir).status == "completed"
    resumed = fit(tmp_path, "b", ckpt_path="last")
    assert_exact_resume(full, resumed, interrupted)


@pytest.mark.parametrize(
    "k", [1, 2, 4, 7], ids=["mid-epoch", "validation-point", "epoch-end", "second-epoch"]
)
def test_resume_with_gradient_accumulation_and_rng_in_the_data(tmp_path, k):
    """accumulate_grad_batches=2 (k is an optimizer step: batch 2k) and a dataset that draws
    augmentation noise from the global RNG in the main process (num_workers=0)."""
    full = fit(tmp_path, "a", accumulate=2, noisy=True)
    assert full[0].global_step == MAX_EPOCHS * BATCHES_PER_EPOCH // 2
    interrupted, _ = fit(tmp_path, "b", max_steps=k, accumulate=2, noisy=True)
    resumed = fit(tmp_path, "b", ckpt_path="last", accumulate=2, noisy=True)
    assert_exact_resume(full, resumed, interrupted)


def test_resume_with_random_augmentation_in_worker_processes(tmp_path):
    full = fit(tmp_path, "a", noisy=True, workers=2)
    interrupted, _ = fit(tmp_path, "b", max_steps=5, noisy=True, workers=2)
    resumed = fit(tmp_path, "b", ckpt_path="last", noisy=True, workers=2)
    assert_exact_resume(full, resumed, interrupted)


def test_resume_from_an_explicit_checkpoint_path(tmp_path):
    full = fit(tmp_path, "a")
    interrupted, _ = fit(tmp_path, "b", max_steps=5)
    ckpt = interrupted.checkpoint_dir / "last.ckpt"
    resumed = fit(tmp_path, "b", ckpt_path=str(ckpt))
    assert_exact_resume(full, resumed, interrupted)


def test_resume_from_a_checkpoint_copied_out_of_its_run(tmp_path):
    """A checkpoint outside any run directory still resumes exactly (into a new run)."""
    full = fit(tmp_path, "a")
    interrupted, _ = fit(tmp_path, "b", max_steps=11)
    copy = tmp_path / "elsewhere" / "snapshot.ckpt"
    copy.parent.mkdir()
    shutil.copy(interrupted.checkpoint_dir / "last.ckpt", copy)
    trainer, model = fit(tmp_path, "c", ckpt_path=copy)
    assert_same_weights(full[1], model)
    assert trainer.global_step == full[0].global_step
    assert trainer.run_dir != interrupted.run_dir
    assert load_run(trainer.run_dir).status == "completed"
    # The new run holds exactly what the uninterrupted run logged after step 11.
    after = [r for r in records(full[0].run_dir) if r["step"] > 11]
    assert records(trainer.run_dir) == after


def test_last_without_any_previous_run_says_what_to_do(tmp_path):
    with pytest.raises(
        CheckpointError,
        match=r"ckpt_path='last': no last\.ckpt among the runs named 'never'.*"
        r"Train once first",
    ):
        fit(tmp_path, "never", ckpt_path="last")


def test_missing_checkpoint_path_is_named(tmp_path):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError, match=r"nope\.ckpt.*does not exist"):
        fit(tmp_path, "x", ckpt_path=missing)


class StopAtStep(Callback):
    """What Ctrl-C does: ask the trainer to stop after the current step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            trainer.request_stop("test")


def test_graceful_stop_saves_last_and_resumes_exactly(tmp_path, capsys):
    full = fit(tmp_path, "a")
    stopped, _ = fit(tmp_path, "b", callbacks=[StopAtStep(6)])
    assert stopped.global_step == 6
    run = load_run(stopped.run_dir)
    assert run.status == "stopped"
    assert run.last_checkpoint is not None
    ckpt = torch.load(run.last_checkpoint, weights_only=True)
    assert ckpt["loop"]["global_step"] == 6
    assert ckpt["loop"]["batches_done"] == 6
    assert "ckpt_path='last'" in capsys.readouterr().err  # the hint says how to resume
    resumed = fit(tmp_path, "b", ckpt_path="last")
    assert_exact_resume(full, resumed, stopped)


class CtrlCAtStep(Callback):
    """A real Ctrl-C: SIGINT delivered to this process in the middle of training."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_stops_after_the_step_and_resumes_exactly(tmp_path):
    handler_before = signal.getsignal(signal.SIGINT)
    full = fit(tmp_path, "a")
    stopped, _ = fit(tmp_path, "b", callbacks=[CtrlCAtStep(10)])
    assert signal.getsignal(signal.SIGINT) is handler_before  # the trainer gave SIGINT back
    assert stopped.global_step == 10
    assert load_run(stopped.run_dir).status == "stopped"
    resumed = fit(tmp_path, "b", ckpt_path="last")
    assert_exact_resume(full, resumed, stopped)


def test_training_more_epochs_after_a_finished_run(tmp_path):
    """fit(max_epochs=1), then resume with max_epochs=3: the same as training 3 epochs at once."""
    full = fit(tmp_path, "a")
    model = make_model()
    first = Trainer(
        seed=SEED,
        deterministic=True,
        max_epochs=1,
        root_dir=tmp_path,
        name="b",
        progress=False,
        val_check_interval=0.5,
    )
    first.fit(model, *loaders())
    assert first.global_step == BATCHES_PER_EPOCH
    resumed = fit(tmp_path, "b", ckpt_path="last")
    assert_exact_resume(full, resumed, first)


class WriteStopFile(Callback):
    """Simulates `lightning-lab stop` / the Lab sidebar: writes STOP into the run directory."""

    def __init__(self, at_step: int, step_sleep: float) -> None:
        self.at_step = at_step
        self.step_sleep = step_sleep
        self.written_at: float | None = None
        self.ended_at: float | None = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            (trainer.run_dir / "STOP").write_text("stop requested by test\n")
            self.written_at = time.monotonic()
        if self.written_at is not None:
            time.sleep(self.step_sleep)

    def on_train_end(self, trainer, module) -> None:
        self.ended_at = time.monotonic()


class Tiny(LabModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.lin(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_stop_file_stops_the_run_within_a_second(tmp_path):
    data = DataLoader(TensorDataset(torch.randn(400, 2)), batch_size=1)  # 400 steps: far more than a second
    writer = WriteStopFile(at_step=3, step_sleep=0.02)
    trainer = Trainer(
        max_epochs=1, root_dir=tmp_path, name="stopme", progress=False, callbacks=[writer], seed=0
    )
    trainer.fit(Tiny(), data)
    assert writer.written_at is not None and writer.ended_at is not None
    assert writer.ended_at - writer.written_at < 1.0
    assert 3 < trainer.global_step < 100
    run = load_run(trainer.run_dir)
    assert run.status == "stopped"
    ckpt = torch.load(run.last_checkpoint, weights_only=True)
    assert ckpt["loop"]["global_step"] == trainer.global_step
    # Resuming removes the honoured STOP file, so the next session is not stopped at once.
    again = Trainer(
        max_epochs=1,
        max_steps=trainer.global_step + 5,
        root_dir=tmp_path,
        name="stopme",
        progress=False,
        seed=0,
    )
    again.fit(Tiny(), data, ckpt_path="last")
    assert again.run_dir == trainer.run_dir
    assert again.global_step == trainer.global_step + 5
    assert load_run(again.run_dir).status == "completed"
    assert not (again.run_dir / "STOP").exists()


class SnapshotLast(Callback):
    """Copies last.ckpt out of the run right after ModelCheckpoint wrote it at ``step``."""

    def __init__(self, step: int, target: Path) -> None:
        self.step = step
        self.target = target

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.target.exists():
            trainer.wait_for_checkpoints()
            shutil.copy(trainer.checkpoint_dir / "last.ckpt", self.target)


@pytest.mark.parametrize("step", [3, 4, 8])  # mid-epoch, just before a validation point, an epoch's last batch
def test_resume_from_a_checkpoint_written_during_the_batch_end_hooks(tmp_path, step):
    """every_n_train_steps saves inside on_train_batch_end: that batch counts as done, its records
    are in the run, and a validation due after it is still run on resume."""
    from lightning_lab.callbacks import ModelCheckpoint

    full = fit(tmp_path, "a")
    snapshot = tmp_path / "snapshot.ckpt"
    fit(tmp_path, "b", callbacks=[ModelCheckpoint(every_n_train_steps=step), SnapshotLast(step, snapshot)])
    assert torch.load(snapshot, weights_only=True)["loop"]["global_step"] == step
    trainer, model = fit(tmp_path, "c", ckpt_path=snapshot)
    assert_same_weights(full[1], model)
    reference = records(full[0].run_dir)
    batch_record = next(i for i, r in enumerate(reference) if r["step"] == step and "train_loss" in r)
    assert records(trainer.run_dir) == reference[batch_record + 1 :]  # pending validation, epoch end, the rest


class _AllReduceDuringWhichASignalArrives:
    """An engine whose all-reduce (the ranks' agreement on a stop) is interrupted by a signal handler."""

    def __init__(self, stops, others: int, reason: str) -> None:
        self.stops, self.others, self.reason = stops, others, reason

    def all_reduce(self, tensor, op):
        self.stops.reason = self.stops.reason or self.reason  # SIGUSR1/SIGINT handled on this rank, mid-collective
        return torch.maximum(tensor, torch.tensor([self.others], dtype=tensor.dtype))


def test_a_signal_during_the_ranks_agreement_waits_for_the_next_one():
    """Under DDP every rank must stop at the same step: a request arriving during the agreement is not one yet."""
    from lightning_lab.engine.stopping import StopRequests

    stops = StopRequests()
    # No rank asked when the codes were sent: every rank goes on, this one included.
    assert stops.agree(_AllReduceDuringWhichASignalArrives(stops, others=0, reason="preempted")) is None
    # The next agreement carries the request to every rank.
    assert stops.agree(_AllReduceDuringWhichASignalArrives(stops, others=0, reason="preempted")) == "preempted"
    # Another rank's request wins over what arrived here late: all ranks stop for the same reason.
    late = StopRequests()
    assert late.agree(_AllReduceDuringWhichASignalArrives(late, others=1, reason="preempted")) == "requested"
