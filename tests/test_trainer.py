"""The Trainer's loop semantics: hook order, logging, accumulation, intervals, schedulers, precision."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_lab import LabDataModule, LabModule, Trainer
from lightning_lab.callbacks import Callback, LearningRateMonitor
from lightning_lab.engine.progress import TextProgress
from lightning_lab.loggers import CSVLogger
from lightning_lab.runs import load_run


def make_data(n: int = 40, features: int = 4, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = x @ torch.arange(1.0, features + 1) + 0.1 * torch.randn(n, generator=g)
    return TensorDataset(x, y)


class Regressor(LabModule):
    def __init__(self, features: int = 4, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(features, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.layer(x).squeeze(-1), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.layer(x).squeeze(-1), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def fit(model, root, train=None, val=None, **options) -> Trainer:
    options.setdefault("progress", False)
    options.setdefault("enable_checkpointing", False)
    trainer = Trainer(root_dir=root, **options)
    trainer.fit(model, train, val)
    return trainer


class Recorder(Callback):
    def __init__(self, events: list[tuple]) -> None:
        self.events = events

    def on_fit_start(self, trainer, module):
        self.events.append(("cb", "on_fit_start", trainer.current_epoch, trainer.global_step))

    def on_train_epoch_start(self, trainer, module):
        self.events.append(("cb", "on_train_epoch_start", trainer.current_epoch, trainer.global_step))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.events.append(("cb", "on_train_batch_end", trainer.current_epoch, batch_idx))

    def on_validation_start(self, trainer, module):
        self.events.append(("cb", "on_validation_start", trainer.current_epoch, trainer.global_step))

    def on_validation_end(self, trainer, module):
        self.events.append(("cb", "on_validation_end", trainer.current_epoch, trainer.global_step))

    def on_train_epoch_end(self, trainer, module):
        # callbacks run after the module's hook and see the epoch's metrics
        self.events.append(("cb", "on_train_epoch_end", trainer.current_epoch, "loss" in trainer.callback_metrics))

    def on_train_end(self, trainer, module):
        self.events.append(("cb", "on_train_end", trainer.current_epoch, trainer.global_step))


class HookModule(Regressor):
    def __init__(self, events: list[tuple]) -> None:
        super().__init__()
        self.events = events

    def training_step(self, batch, batch_idx):
        self.events.append(("module", "training_step", self.current_epoch, batch_idx))
        loss = super().training_step(batch, batch_idx)
        self.log("loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.events.append(("module", "validation_step", self.current_epoch, batch_idx))
        super().validation_step(batch, batch_idx)

    def on_train_start(self):
        self.events.append(("module", "on_train_start", self.current_epoch, self.global_step))

    def on_train_epoch_start(self):
        self.events.append(("module", "on_train_epoch_start", self.current_epoch, self.global_step))

    def on_train_epoch_end(self):
        self.events.append(("module", "on_train_epoch_end", self.current_epoch, self.global_step))

    def on_validation_epoch_end(self):
        self.events.append(("module", "on_validation_epoch_end", self.current_epoch, self.global_step))

    def on_train_end(self):
        self.events.append(("module", "on_train_end", self.current_epoch, self.global_step))


def test_hook_order_is_exact(tmp_path):
    events: list[tuple] = []
    data = make_data(12)
    fit(HookModule(events), tmp_path, DataLoader(data, batch_size=4), DataLoader(data, batch_size=6),
        max_epochs=2, val_check_interval=2, callbacks=[Recorder(events)])
    expected: list[tuple] = [("cb", "on_fit_start", 0, 0), ("module", "on_train_start", 0, 0)]
    for epoch in range(2):
        expected += [("module", "on_train_epoch_start", epoch, 3 * epoch), ("cb", "on_train_epoch_start", epoch, 3 * epoch)]
        for batch_idx in range(3):
            expected += [("module", "training_step", epoch, batch_idx), ("cb", "on_train_batch_end", epoch, batch_idx)]
            if batch_idx == 1:  # val_check_interval=2 batches
                step = 3 * epoch + 2
                expected += [("cb", "on_validation_start", epoch, step), ("module", "validation_step", epoch, 0),
                             ("module", "validation_step", epoch, 1), ("module", "on_validation_epoch_end", epoch, step),
                             ("cb", "on_validation_end", epoch, step)]
        expected += [("module", "on_train_epoch_end", epoch, 3 * epoch + 3), ("cb", "on_train_epoch_end", epoch, True)]
    expected += [("module", "on_train_end", 2, 6), ("cb", "on_train_end", 2, 6)]
    assert events == expected


class WeightedLogger(LabModule):
    """Logs a per-sample value whose true dataset mean is known."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        (x,) = batch
        self.log("x_mean", x.mean(), on_step=True, on_epoch=True)
        return (self.w * x).sum() * 0 + self.w.sum() ** 2

    def validation_step(self, batch, batch_idx):
        (x,) = batch
        self.log("val_x", x.mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_epoch_means_are_weighted_by_batch_size_with_an_uneven_last_batch(tmp_path):
    values = torch.arange(10, dtype=torch.float32)  # batches of 4, 4, 2: plain mean of means would be wrong
    data = TensorDataset(values)
    trainer = fit(WeightedLogger(), tmp_path, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4),
                  max_epochs=1)
    metrics = trainer.callback_metrics
    assert metrics["val_x"] == pytest.approx(4.5)
    assert metrics["x_mean_epoch"] == pytest.approx(4.5)
    assert metrics["x_mean_step"] == pytest.approx(8.5)  # the last batch (8, 9)
    records = trainer.run.metrics
    step_values = [r["x_mean_step"] for r in records if "x_mean_step" in r]
    assert step_values == pytest.approx([1.5, 5.5, 8.5])
    assert [r["step"] for r in records if "x_mean_step" in r] == [1, 2, 3]
    assert isinstance(metrics["val_x"], float)


def test_explicit_batch_size_overrides_inference(tmp_path):
    class Explicit(WeightedLogger):
        def validation_step(self, batch, batch_idx):
            self.log("val_w", float(batch_idx), batch_size=1 if batch_idx == 0 else 3)

    data = TensorDataset(torch.arange(8, dtype=torch.float32))
    trainer = fit(Explicit(), tmp_path, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4), max_epochs=1)
    assert trainer.callback_metrics["val_w"] == pytest.approx((0 * 1 + 1 * 3) / 4)


def weights_after(root, batch_size: int, accumulate: int, name: str) -> torch.Tensor:
    torch.manual_seed(0)
    model = Regressor(lr=0.1)
    data = make_data(32)
    fit(model, root, DataLoader(data, batch_size=batch_size, shuffle=True), max_epochs=2, seed=3,
        accumulate_grad_batches=accumulate, name=name)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_accumulating_two_batches_of_8_equals_one_batch_of_16(tmp_path):
    accumulated = weights_after(tmp_path, 8, 2, "acc")
    single = weights_after(tmp_path, 16, 1, "big")
    torch.testing.assert_close(accumulated, single, rtol=1e-5, atol=1e-6)
    assert not torch.equal(accumulated, weights_after(tmp_path, 8, 1, "plain"))


def test_global_step_counts_optimizer_steps_with_accumulation(tmp_path):
    data = make_data(40)  # 5 batches of 8: steps after batches 2, 4 and the partial window at 5
    trainer = fit(Regressor(), tmp_path, DataLoader(data, batch_size=8), max_epochs=2, accumulate_grad_batches=2)
    assert trainer.global_step == 6


def test_same_seed_same_weights_and_shuffling(tmp_path):
    def run() -> torch.Tensor:
        trainer = Trainer(seed=7, max_epochs=2, progress=False, root_dir=tmp_path, enable_checkpointing=False)
        model = Regressor()  # built after the Trainer: its seed fixes the initial weights too
        trainer.fit(model, DataLoader(make_data(24), batch_size=5, shuffle=True))
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


def test_max_steps_stops_mid_epoch_and_limits_apply(tmp_path):
    data = make_data(40)
    trainer = fit(Regressor(), tmp_path, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4),
                  max_steps=7, max_epochs=5, limit_val_batches=2)
    assert trainer.global_step == 7 and trainer.current_epoch == 0
    trainer = fit(Regressor(), tmp_path, DataLoader(data, batch_size=4), max_epochs=3, limit_train_batches=0.5)
    assert trainer.global_step == 15


def test_val_check_interval_fraction_and_every_n_epochs(tmp_path):
    data = make_data(40)
    trainer = fit(Regressor(), tmp_path, DataLoader(data, batch_size=4), DataLoader(data, batch_size=20),
                  max_epochs=4, val_check_interval=0.5, check_val_every_n_epoch=2)
    val_steps = [r["step"] for r in trainer.run.metrics if "val_loss" in r]
    assert val_steps == [15, 20, 35, 40]


def test_fast_dev_run_runs_one_batch_each(tmp_path):
    seen = []

    class Counting(Regressor):
        def validation_step(self, batch, batch_idx):
            seen.append(batch_idx)
            super().validation_step(batch, batch_idx)

    data = make_data(40)
    trainer = Trainer(fast_dev_run=True, progress=False, root_dir=tmp_path)
    trainer.fit(Counting(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    assert trainer.global_step == 1 and seen == [0]
    assert trainer.run.checkpoints == []


class Scheduled(Regressor):
    def __init__(self, interval: str) -> None:
        super().__init__(lr=1.0)
        self.interval = interval

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return [opt], [{"scheduler": sched, "interval": self.interval}]


@pytest.mark.parametrize(("interval", "expected"), [("epoch", 0.25), ("step", 0.5**6)])
def test_schedulers_step_per_epoch_or_per_step(tmp_path, interval, expected):
    model = Scheduled(interval)
    trainer = fit(model, tmp_path, DataLoader(make_data(12), batch_size=4), max_epochs=2,
                  callbacks=[LearningRateMonitor()])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    logged = [r["lr-SGD"] for r in trainer.run.metrics if "lr-SGD" in r]
    assert logged[0] == 1.0 and logged[-1] == pytest.approx(expected * (2 if interval == "epoch" else 1))


def test_reduce_on_plateau_uses_the_monitored_metric(tmp_path):
    class Plateau(Regressor):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.0)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
            opt.param_groups[0]["lr"] = 0.0
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}

    data = make_data(12)
    trainer = fit(Plateau(), tmp_path, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4), max_epochs=3)
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0  # lr 0 → val_loss flat → reductions (0 stays 0)
    assert trainer.lr_scheduler_configs[0].scheduler.num_bad_epochs == 0  # it was stepped with the metric


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_on_cpu(tmp_path, precision):
    model = Regressor(lr=0.02)
    data = make_data(64)
    trainer = fit(model, tmp_path, DataLoader(data, batch_size=8), DataLoader(data, batch_size=64),
                  max_epochs=8, precision=precision)
    first = next(r["val_loss"] for r in trainer.run.metrics if "val_loss" in r)
    assert trainer.callback_metrics["val_loss"] < first / 2
    assert trainer.run.config["precision"] == precision


def test_gradient_clipping_bounds_the_update(tmp_path):
    model = Regressor(lr=1.0)
    before = model.layer.weight.detach().clone()
    data = TensorDataset(torch.full((4, 4), 100.0), torch.zeros(4))
    fit(model, tmp_path, DataLoader(data, batch_size=4), max_steps=1, gradient_clip_val=0.5)
    change = torch.cat([(model.layer.weight - before).flatten()]).norm()
    assert change <= 0.5 + 1e-5


def test_datamodule_predict_and_test(tmp_path):
    class Data(LabDataModule):
        def setup(self, stage):
            self.data = make_data(20)

        def train_dataloader(self):
            return DataLoader(self.data, batch_size=5)

        def test_dataloader(self):
            return DataLoader(self.data, batch_size=10)

        def predict_dataloader(self):
            return DataLoader(self.data, batch_size=10)

    class Model(Regressor):
        def test_step(self, batch, batch_idx):
            self.log("test_loss", F.mse_loss(self.layer(batch[0]).squeeze(-1), batch[1]))

        def forward(self, x):
            return self.layer(x)

    model, data = Model(), Data()
    trainer = Trainer(max_epochs=2, progress=False, root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    results = trainer.test(model, datamodule=data)
    assert set(results[0]) == {"test_loss"}
    predictions = trainer.predict(model, datamodule=data)
    assert [p.shape for p in predictions] == [torch.Size([10, 1])] * 2
    run = load_run(trainer.run_dir)
    assert run.status == "completed" and "test_loss" in run.final


def test_text_progress_prints_readable_lines(tmp_path):
    stream = io.StringIO()

    class Shown(Regressor):
        def validation_step(self, batch, batch_idx):
            self.log("val_loss", F.mse_loss(self.layer(batch[0]).squeeze(-1), batch[1]), prog_bar=True)

    data = make_data(16)
    fit(Shown(), tmp_path, DataLoader(data, batch_size=4), DataLoader(data, batch_size=8), max_epochs=2,
        progress=TextProgress(mode="lines", stream=stream))
    lines = stream.getvalue().splitlines()
    assert any(line.startswith("epoch 1/2") and "val_loss=" in line for line in lines)
    assert "\r" not in stream.getvalue()
    bar = io.StringIO()
    fit(Shown(), tmp_path, DataLoader(data, batch_size=4), max_epochs=1, progress=TextProgress(mode="bar", stream=bar))
    assert "[########################] 4/4" in bar.getvalue()


def test_csv_logger_writes_the_same_records(tmp_path):
    import csv

    trainer = fit(Regressor(), tmp_path, DataLoader(make_data(16), batch_size=4), max_epochs=2, loggers=[CSVLogger()])
    with (trainer.run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    logged = [r["train_loss"] for r in trainer.run.metrics if "train_loss" in r]  # not the sys/... timing records
    assert [float(r["train_loss"]) for r in rows] == pytest.approx(logged)


def test_log_outside_a_trainer_is_a_no_op():
    model = Regressor()
    loss = model.training_step(next(iter(DataLoader(make_data(4), batch_size=4))), 0)
    assert math.isfinite(loss.item())


def test_run_json_records_the_run(tmp_path):
    trainer = fit(Regressor(lr=0.01), tmp_path, DataLoader(make_data(8), batch_size=4), max_epochs=1, name="exp")
    run = trainer.run
    assert run.name == "exp" and run.path.parent.parent == tmp_path
    assert run.hparams == {"features": 4, "lr": 0.01}
    assert run.info["backend"] == "inprocess" and run.info["world_size"] == 1
    assert run.config["max_epochs"] == 1
    assert run.final["train_loss"] == pytest.approx(trainer.callback_metrics["train_loss"])
