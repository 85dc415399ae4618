"""Checkpoints and the callbacks around them: what last.ckpt holds, atomic writes, ModelCheckpoint's
top-k and step saving, EarlyStopping, and the Run that trainer.run returns."""

from __future__ import annotations

import json
import math
import re
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_lab import LabModule, Trainer
from lightning_lab.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning_lab.engine.engine import write_checkpoint
from lightning_lab.runs import Run, load_run

BATCHES = 4  # training batches per epoch

_gen = torch.Generator().manual_seed(0)
X = torch.randn(16, 3, generator=_gen)
Y = X.sum(dim=1, keepdim=True)


def train_loader() -> DataLoader:
    return DataLoader(TensorDataset(X, Y), batch_size=len(X) // BATCHES, shuffle=True)


def val_loader() -> DataLoader:
    return DataLoader(TensorDataset(X[:8], Y[:8]), batch_size=4)


class Regressor(LabModule):
    def __init__(self, lr: float = 0.05, hidden: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.loaded_extra: dict | None = None

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)]

    def on_save_checkpoint(self, checkpoint):
        checkpoint["extra"] = {"note": "mine", "global_step": self.global_step}

    def on_load_checkpoint(self, checkpoint):
        self.loaded_extra = checkpoint.get("extra")


class ScriptedValLoss(Regressor):
    """Logs a fixed sequence of val_loss values, one per validation."""

    def __init__(self, script: list[float], lr: float = 0.05) -> None:
        super().__init__(lr=lr)
        self.script = script
        self.round = -1

    def on_validation_epoch_start(self) -> None:
        self.round += 1

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.script[self.round])


def trainer(tmp_path: Path, **kwargs) -> Trainer:
    kwargs.setdefault("max_epochs", 2)
    return Trainer(root_dir=tmp_path, progress=False, seed=0, **kwargs)


def ckpt_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------- contents
def test_last_ckpt_holds_everything_needed_to_continue(tmp_path):
    model = Regressor(lr=0.05, hidden=8)
    early = EarlyStopping(monitor="val_loss", patience=5)
    t = trainer(tmp_path, max_epochs=2, callbacks=[early])
    t.fit(model, train_loader(), val_loader())
    path = t.checkpoint_dir / "last.ckpt"
    ckpt = torch.load(path, weights_only=True)  # a checkpoint can never execute code

    assert ckpt["format"] == "lightning_lab.checkpoint"
    state = model.state_dict()
    assert ckpt["state_dict"].keys() == state.keys()
    assert all(torch.equal(ckpt["state_dict"][k], state[k]) for k in state)  # the final weights
    optimizer = ckpt["optimizer"]
    assert len(optimizer["state"]) == len(list(model.parameters()))
    assert all("momentum_buffer" in s for s in optimizer["state"].values())
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 2
    assert optimizer["param_groups"][0]["lr"] == pytest.approx(0.05 * 0.5**2)
    assert ckpt["loop"]["epoch"] == 2  # both epochs finished: a resume starts epoch 2
    assert ckpt["loop"]["global_step"] == 2 * BATCHES
    assert ckpt["loop"]["batches_done"] == 0
    rng = ckpt["rng"]
    assert {"python", "numpy", "torch"} <= rng.keys()
    assert isinstance(rng["torch"], torch.Tensor) and rng["torch"].dtype == torch.uint8
    assert ckpt["hparams"] == {"lr": 0.05, "hidden": 8}
    assert ckpt["versions"]["torch"] == str(torch.__version__)
    assert "lightning_lab" in ckpt["versions"]
    callbacks = ckpt["callbacks"]
    assert callbacks["EarlyStopping[val_loss]"]["best"] == early.best
    assert callbacks["EarlyStopping[val_loss]"]["wait"] == early.wait
    assert callbacks["ModelCheckpoint[None]"]["last_model_path"] == str(path)
    assert ckpt["shuffle_seed"] == 0
    assert ckpt["extra"] == {"note": "mine", "global_step": 2 * BATCHES}  # on_save_checkpoint


def test_resume_restores_callback_state_and_calls_on_load_checkpoint(tmp_path):
    first = trainer(
        tmp_path, name="r", max_epochs=1, callbacks=[EarlyStopping(monitor="val_loss", patience=5)]
    )
    first.fit(Regressor(), train_loader(), val_loader())
    saved = torch.load(first.checkpoint_dir / "last.ckpt", weights_only=True)["callbacks"][
        "EarlyStopping[val_loss]"
    ]

    class Spy(Callback):
        seen: dict | None = None

        def on_train_start(self, trainer, module):
            Spy.seen = {"best": early.best, "wait": early.wait}

    early = EarlyStopping(monitor="val_loss", patience=5)
    model = Regressor()
    resumed = trainer(tmp_path, name="r", max_epochs=2, callbacks=[early, Spy()])
    resumed.fit(model, train_loader(), val_loader(), ckpt_path="last")
    assert Spy.seen == {"best": saved["best"], "wait": saved["wait"]}
    assert math.isfinite(Spy.seen["best"])
    assert model.loaded_extra == {"note": "mine", "global_step": BATCHES}


# ---------------------------------------------------------------------------------- atomicity
def test_no_temporary_files_are_left_in_checkpoints(tmp_path):
    t = trainer(
        tmp_path,
        max_epochs=3,
        callbacks=[ModelCheckpoint(monitor="val_loss", save_top_k=2, every_n_train_steps=1)],
    )
    t.fit(Regressor(), train_loader(), val_loader())
    names = ckpt_files(t.checkpoint_dir)
    assert "last.ckpt" in names
    assert all(n == "last.ckpt" or re.fullmatch(r"best-.*\.ckpt", n) for n in names), names
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]


def test_failed_checkpoint_write_leaves_the_previous_file_untouched(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    write_checkpoint(path, {"format": "lightning_lab.checkpoint", "weights": torch.arange(1000.0)})
    before = path.read_bytes()
    unpicklable = {"weights": torch.zeros(100_000), "hook": lambda: None}  # torch.save fails on the lambda
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises; the file is what matters
        write_checkpoint(path, unpicklable)
    assert path.read_bytes() == before
    assert ckpt_files(path.parent) == ["last.ckpt"]  # no temporary file left behind
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.arange(1000.0))


# ---------------------------------------------------------------------------------- ModelCheckpoint
SCRIPT = [5.0, 3.0, 4.0, 1.0, 2.0, 6.0]


@pytest.mark.parametrize(("mode", "kept", "best"), [("min", {1.0, 2.0}, 1.0), ("max", {6.0, 5.0}, 6.0)])
def test_model_checkpoint_keeps_the_top_k(tmp_path, mode, kept, best):
    callback = ModelCheckpoint(monitor="val_loss", mode=mode, save_top_k=2)
    t = trainer(tmp_path, max_epochs=len(SCRIPT), callbacks=[callback])
    t.fit(ScriptedValLoss(SCRIPT), train_loader(), val_loader())

    logged = [r["val_loss"] for r in load_run(t.run_dir).metrics if "val_loss" in r]
    assert logged == SCRIPT
    expected = set(sorted(logged, reverse=(mode == "max"))[:2])
    assert expected == kept
    best_files = [n for n in ckpt_files(t.checkpoint_dir) if n.startswith("best-")]
    assert len(best_files) == 2
    scores = {float(re.search(r"val_loss=([0-9.e+-]+)\.ckpt$", n).group(1)) for n in best_files}
    assert scores == kept
    assert set(callback.best_k.values()) == kept
    assert Path(callback.best_model_path).is_file()
    assert callback.best_model_score == best
    assert f"val_loss={best:.4g}.ckpt" in callback.best_model_path
    # The best file holds the weights of the epoch that scored best.
    best_epoch = SCRIPT.index(best)
    ckpt = torch.load(callback.best_model_path, weights_only=True)
    assert ckpt["loop"]["global_step"] == (best_epoch + 1) * BATCHES
    assert [p.name for p in t.run.checkpoints][0] == "last.ckpt"
    assert len(t.run.checkpoints) == 3


def test_model_checkpoint_save_top_k_zero_writes_no_best_file(tmp_path):
    t = trainer(tmp_path, max_epochs=3, callbacks=[ModelCheckpoint(monitor="val_loss", save_top_k=0)])
    t.fit(ScriptedValLoss(SCRIPT), train_loader(), val_loader())
    assert ckpt_files(t.checkpoint_dir) == ["last.ckpt"]


class LastCkptSpy(Callback):
    """After every batch (after ModelCheckpoint ran), which step does last.ckpt hold?"""

    def __init__(self) -> None:
        self.seen: list[int | None] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        trainer.wait_for_checkpoints()  # last.ckpt is written in the background
        path = trainer.checkpoint_dir / "last.ckpt"
        self.seen.append(
            torch.load(path, weights_only=True)["loop"]["global_step"] if path.exists() else None
        )


def test_every_n_train_steps_updates_last_ckpt(tmp_path):
    spy = LastCkptSpy()
    loader = DataLoader(TensorDataset(X, Y), batch_size=1)  # 16 batches: no epoch end before step 7
    t = trainer(tmp_path, max_epochs=1, max_steps=7, callbacks=[ModelCheckpoint(every_n_train_steps=3), spy])
    t.fit(Regressor(), loader)
    assert spy.seen == [None, None, 3, 3, 3, 6, 6]
    # And when max_steps stops the run, last.ckpt is brought up to the final step.
    assert torch.load(t.checkpoint_dir / "last.ckpt", weights_only=True)["loop"]["global_step"] == 7


def test_every_n_train_steps_counts_optimizer_steps_with_accumulation(tmp_path):
    spy = LastCkptSpy()
    loader = DataLoader(TensorDataset(X, Y), batch_size=1)
    t = trainer(
        tmp_path,
        max_epochs=1,
        max_steps=4,
        accumulate_grad_batches=2,
        callbacks=[ModelCheckpoint(every_n_train_steps=2), spy],
    )
    t.fit(Regressor(), loader)
    # after batches 1..8 the optimizer has stepped 0,1,1,2,2,3,3,4 times → saves at steps 2 and 4
    assert spy.seen == [None, None, None, 2, 2, 2, 2, 4]


# ---------------------------------------------------------------------------------- EarlyStopping
def test_early_stopping_stops_when_val_loss_stops_improving(tmp_path):
    early = EarlyStopping(monitor="val_loss", patience=2)
    t = trainer(tmp_path, max_epochs=20, callbacks=[early])
    t.fit(Regressor(lr=0.0), train_loader(), val_loader())  # lr=0: val_loss never changes
    val = [r["val_loss"] for r in load_run(t.run_dir).metrics if "val_loss" in r]
    assert len(val) == 3  # patience + 1 validations
    assert len(set(val)) == 1
    assert early.stopped_epoch == 2
    assert t.global_step == 3 * BATCHES
    assert t.current_epoch == 3  # epochs 0, 1, 2 ran; 17 were skipped
    assert load_run(t.run_dir).status == "completed"


def test_early_stopping_keeps_going_while_val_loss_improves(tmp_path):
    early = EarlyStopping(monitor="val_loss", patience=2)
    t = trainer(tmp_path, max_epochs=6, callbacks=[early])
    t.fit(ScriptedValLoss([6.0, 5.0, 5.5, 4.0, 4.5, 3.0]), train_loader(), val_loader())
    assert early.stopped_epoch is None
    assert t.global_step == 6 * BATCHES


@pytest.mark.parametrize("mode", ["min", "max"])
def test_early_stopping_respects_mode(tmp_path, mode):
    early = EarlyStopping(monitor="val_loss", mode=mode, patience=1)
    t = trainer(tmp_path, max_epochs=5, callbacks=[early])
    t.fit(ScriptedValLoss([3.0, 2.0, 1.0, 0.5, 0.2]), train_loader(), val_loader())
    # Decreasing values: improvement under "min" (runs all 5 epochs), none under "max" (stops at once).
    assert early.stopped_epoch == (None if mode == "min" else 1)


def test_early_stopping_stops_at_the_first_non_finite_value(tmp_path):
    early = EarlyStopping(monitor="val_loss", patience=5)
    t = trainer(tmp_path, max_epochs=5, callbacks=[early])
    t.fit(ScriptedValLoss([math.nan] * 5), train_loader(), val_loader())
    assert early.stopped_epoch == 0
    assert t.global_step == BATCHES
    assert "not finite" in early.reason


def test_early_stopping_without_check_finite_ignores_nan(tmp_path):
    early = EarlyStopping(monitor="val_loss", patience=5, check_finite=False)
    t = trainer(tmp_path, max_epochs=3, callbacks=[early])
    t.fit(ScriptedValLoss([math.nan] * 3), train_loader(), val_loader())
    assert early.stopped_epoch is None
    assert t.global_step == 3 * BATCHES


# ---------------------------------------------------------------------------------- trainer.run
def test_trainer_run_is_the_run_directory_as_a_run(tmp_path):
    t = trainer(tmp_path, name="exp", max_epochs=2)
    t.fit(Regressor(lr=0.05, hidden=8), train_loader(), val_loader())
    run = t.run
    assert isinstance(run, Run)
    from_disk = load_run(t.run_dir)
    assert type(run) is type(from_disk)
    assert run == from_disk
    assert run.path == t.run_dir == tmp_path / "exp" / run.id
    assert run.name == "exp"
    info = json.loads((t.run_dir / "run.json").read_text())
    assert info["status"] == "completed" == run.status
    assert info["hparams"] == {"lr": 0.05, "hidden": 8} == run.hparams
    assert info["config"]["max_epochs"] == 2 and info["config"]["seed"] == 0
    assert info["world_size"] == 1
    assert info["backend"] == "inprocess"
    assert info["final"] == pytest.approx(t.callback_metrics)
    assert set(info["final"]) == {"train_loss", "val_loss"}
    assert run.final["val_loss"] == [r["val_loss"] for r in run.metrics if "val_loss" in r][-1]
    assert run.last_checkpoint == t.checkpoint_dir / "last.ckpt"


def test_background_writer_snapshots_the_state_and_reports_failures(tmp_path):
    from lightning_lab.engine.engine import BackgroundCheckpointWriter
    from lightning_lab.errors import CheckpointError

    writer = BackgroundCheckpointWriter()
    weights = torch.zeros(1000)
    writer.write(tmp_path / "a.ckpt", {"weights": weights})
    weights += 1  # training goes on while the file is written
    writer.wait()
    assert torch.equal(torch.load(tmp_path / "a.ckpt", weights_only=True)["weights"], torch.zeros(1000))
    (tmp_path / "blocked").write_text("a file where a folder should be")
    writer.write(tmp_path / "blocked" / "b.ckpt", {"weights": weights})
    with pytest.raises(CheckpointError, match=r"writing checkpoint .*b\.ckpt failed"):
        writer.wait()
    writer.wait()  # the error is reported once


def test_a_payload_that_cannot_be_saved_fails_at_save_time_and_writes_nothing(tmp_path):
    from lightning_lab.engine.engine import BackgroundCheckpointWriter
    from lightning_lab.errors import CheckpointError

    writer = BackgroundCheckpointWriter()
    with pytest.raises(CheckpointError, match=r"writing checkpoint .*c\.ckpt failed"):
        writer.write(tmp_path / "c.ckpt", {"weights": torch.zeros(10), "hook": lambda: None})
    writer.wait()  # nothing pending, nothing to report
    assert list(tmp_path.iterdir()) == []


class _InterruptsWhilePickled:
    """Sends this process a Ctrl-C while torch.save pickles it."""

    def __reduce__(self):
        signal.raise_signal(signal.SIGINT)
        return (str, ("pickled",))


def test_ctrl_c_while_a_checkpoint_is_serialised_still_writes_it_then_interrupts(tmp_path):
    from lightning_lab.engine.engine import BackgroundCheckpointWriter

    writer = BackgroundCheckpointWriter()
    with pytest.raises(KeyboardInterrupt):
        writer.write(tmp_path / "d.ckpt", {"weights": torch.ones(10), "marker": _InterruptsWhilePickled()})
    writer.wait()
    saved = torch.load(tmp_path / "d.ckpt", weights_only=False)
    assert saved["marker"] == "pickled" and torch.equal(saved["weights"], torch.ones(10))


def test_a_checkpoint_that_cannot_be_written_fails_the_run(tmp_path):
    from lightning_lab.errors import CheckpointError

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    t = trainer(tmp_path, max_epochs=1, callbacks=[ModelCheckpoint(dirpath=blocked)])
    with pytest.raises(CheckpointError, match="not-a-folder"):
        t.fit(Regressor(), train_loader())
    assert load_run(t.run_dir).status == "failed"
