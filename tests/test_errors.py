"""Every user-reachable mistake gets a LabError whose message names the user's method or option
and says how to fix it (SPEC "Reliability")."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_lab import LabModule, Trainer
from lightning_lab.callbacks import EarlyStopping, ModelCheckpoint
from lightning_lab.errors import CheckpointError, ConfigurationError, LabError, NonFiniteError, UserCodeError
from lightning_lab.runs import list_runs, load_run

X = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
Y = X.sum(dim=1, keepdim=True)
BATCHES = 4


def data() -> DataLoader:
    return DataLoader(TensorDataset(X, Y), batch_size=len(X) // BATCHES)


class Net(LabModule):
    def __init__(self, hidden: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Linear(3, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(
    tmp_path: Path, model: LabModule, *, val: bool = False, name: str | None = None, ckpt_path=None, **kwargs
) -> Trainer:
    kwargs.setdefault("max_epochs", 2)
    trainer = Trainer(root_dir=tmp_path, progress=False, name=name, **kwargs)
    trainer.fit(model, data(), data() if val else None, ckpt_path=ckpt_path)
    return trainer


def only_run(tmp_path: Path):
    runs = list_runs(tmp_path)
    assert len(runs) == 1
    return runs[0]


def test_every_error_is_a_lab_error():
    for error in (ConfigurationError, UserCodeError, CheckpointError, NonFiniteError):
        assert issubclass(error, LabError)


# ---------------------------------------------------------------------------------- training_step
class ReturnsNone(Net):
    def training_step(self, batch, batch_idx):
        F.mse_loss(self(batch[0]), batch[1])


class ReturnsVector(Net):
    def training_step(self, batch, batch_idx):
        return F.mse_loss(self(batch[0]), batch[1], reduction="none")


class ReturnsDictWithoutLoss(Net):
    def training_step(self, batch, batch_idx):
        return {"los": F.mse_loss(self(batch[0]), batch[1])}


class ReturnsDetached(Net):
    def training_step(self, batch, batch_idx):
        with torch.no_grad():
            return F.mse_loss(self(batch[0]), batch[1])


class ReturnsFloat(Net):
    def training_step(self, batch, batch_idx):
        return F.mse_loss(self(batch[0]), batch[1]).item()


@pytest.mark.parametrize(
    ("model", "pattern"),
    [
        (
            ReturnsNone(),
            r"ReturnsNone\.training_step returned NoneType for batch 0.*Did you forget `return loss`\?",
        ),
        (
            ReturnsVector(),
            r"ReturnsVector\.training_step returned a loss of shape \(4, 1\).*scalar.*loss\.mean\(\)",
        ),
        (
            ReturnsDictWithoutLoss(),
            r"ReturnsDictWithoutLoss\.training_step returned a dict without a 'loss' key",
        ),
        (
            ReturnsDetached(),
            r"ReturnsDetached\.training_step returned a loss that does not require grad.*no_grad",
        ),
        (ReturnsFloat(), r"ReturnsFloat\.training_step returned float.*must return the loss tensor"),
    ],
    ids=["none", "non-scalar", "dict-without-loss", "no-grad", "python-float"],
)
def test_bad_training_step_return(tmp_path, model, pattern):
    with pytest.raises(UserCodeError, match=pattern):
        fit(tmp_path, model)
    run = only_run(tmp_path)
    assert run.status == "failed"
    assert run.error["type"] == "UserCodeError"


def test_training_step_returning_a_dict_with_loss_works(tmp_path):
    class ReturnsDict(Net):
        def training_step(self, batch, batch_idx):
            return {"loss": F.mse_loss(self(batch[0]), batch[1]), "extra": 1}

    assert fit(tmp_path, ReturnsDict()).global_step == 2 * BATCHES


def test_missing_training_step(tmp_path):
    class NoStep(LabModule):
        def configure_optimizers(self):
            return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)

    with pytest.raises(
        UserCodeError,
        match=r"NoStep does not define training_step\(self, batch, batch_idx\).*add "
        r"one that returns the loss",
    ):
        fit(tmp_path, NoStep())


# ---------------------------------------------------------------------------------- configure_optimizers
class NoOptimizers(LabModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        return F.mse_loss(self.lin(batch[0]), batch[1])


def optimizers_returning(value_factory):
    class Returns(Net):
        def configure_optimizers(self):
            return value_factory(self)

    return Returns()


def test_configure_optimizers_missing(tmp_path):
    with pytest.raises(
        UserCodeError,
        match=r"NoOptimizers does not define configure_optimizers\(self\).*"
        r"torch\.optim\.Adam\(self\.parameters\(\)",
    ):
        fit(tmp_path, NoOptimizers())


@pytest.mark.parametrize(
    ("factory", "pattern"),
    [
        (lambda m: None, r"Returns\.configure_optimizers returned None\. Return an optimizer"),
        (lambda m: "adam", r"Returns\.configure_optimizers returned a str \('adam'\)\. Return an optimizer"),
        (lambda m: "ab", r"Returns\.configure_optimizers returned a str \('ab'\)\. Return an optimizer"),
        (
            lambda m: [
                torch.optim.SGD(m.body.parameters(), lr=0.1),
                torch.optim.SGD(m.head.parameters(), lr=0.1),
            ],
            r"Returns\.configure_optimizers returned 2 optimizers.*one optimizer with several parameter groups",
        ),
        (
            lambda m: (
                [torch.optim.SGD(m.body.parameters(), lr=0.1), torch.optim.Adam(m.head.parameters())],
                [],
            ),
            r"Returns\.configure_optimizers returned 2 optimizers",
        ),
        (
            lambda m: {"lr_scheduler": None},
            r"Returns\.configure_optimizers returned None where an optimizer was "
            r"expected",
        ),
        (
            lambda m: {"optimizer": torch.optim.SGD(m.parameters(), lr=0.1), "lr_scheduler": 0.5},
            r"Returns\.configure_optimizers returned a float \(0\.5\) where a learning-rate scheduler was expected",
        ),
    ],
    ids=[
        "none",
        "string",
        "two-char-string",
        "two-optimizers",
        "two-optimizers-tuple",
        "dict-without-optimizer",
        "bad-scheduler",
    ],
)
def test_configure_optimizers_bad_return(tmp_path, factory, pattern):
    with pytest.raises(UserCodeError, match=pattern):
        fit(tmp_path, optimizers_returning(factory))


def test_plateau_scheduler_without_monitor(tmp_path):
    def factory(m):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt)}

    with pytest.raises(UserCodeError, match=r"ReduceLROnPlateau needs a metric.*\"monitor\": \"val_loss\""):
        fit(tmp_path, optimizers_returning(factory))


def test_plateau_scheduler_monitoring_an_unlogged_metric(tmp_path):
    def factory(m):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_acc"}}

    with pytest.raises(
        UserCodeError,
        match=r"ReduceLROnPlateau monitors 'val_acc', which was never logged\. "
        r"Logged metrics: \['train_loss'\]",
    ):
        fit(tmp_path, optimizers_returning(factory))


# ---------------------------------------------------------------------------------- self.log
def logging(value_factory, name: str = "metric"):
    class Logs(Net):
        def training_step(self, batch, batch_idx):
            self.log(name, value_factory())
            return super().training_step(batch, batch_idx)

    return Logs()


@pytest.mark.parametrize(
    ("model", "pattern"),
    [
        (
            logging(lambda: torch.ones(3)),
            r"self\.log\('metric', \.\.\.\) in Logs\.training_step got a tensor of shape \(3,\); log a scalar, e\.g\. "
            r"`value\.mean\(\)`",
        ),
        (
            logging(lambda: "high"),
            r"self\.log\('metric', \.\.\.\) in Logs\.training_step got str 'high'; log a number or a one-element tensor",
        ),
        (logging(lambda: [1.0, 2.0]), r"self\.log\('metric', \.\.\.\) in Logs\.training_step got list"),
        (
            logging(lambda: 1.0, name="step"),
            r"self\.log\('step', \.\.\.\) in Logs\.training_step: the name must be a string other than "
            r"\['epoch', 'step', 'time'\]",
        ),
        (logging(lambda: 1.0, name="epoch"), r"self\.log\('epoch', \.\.\.\)"),
    ],
    ids=["non-scalar-tensor", "string", "list", "reserved-step", "reserved-epoch"],
)
def test_bad_self_log(tmp_path, model, pattern):
    with pytest.raises(UserCodeError, match=pattern):
        fit(tmp_path, model)


def test_bad_self_log_in_validation_step_names_that_hook(tmp_path):
    class LogsInValidation(Net):
        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.zeros(2, 2))

    with pytest.raises(
        UserCodeError, match=r"in LogsInValidation\.validation_step got a tensor of shape \(2, 2\)"
    ):
        fit(tmp_path, LogsInValidation(), val=True)


# ---------------------------------------------------------------------------------- monitors
@pytest.mark.parametrize(
    ("callback", "owner"),
    [
        (lambda: ModelCheckpoint(monitor="val_acc"), r"ModelCheckpoint\(monitor='val_acc'\)"),
        (lambda: EarlyStopping(monitor="val_acc"), r"EarlyStopping\(monitor='val_acc'\)"),
    ],
    ids=["ModelCheckpoint", "EarlyStopping"],
)
def test_monitor_of_a_metric_never_logged(tmp_path, callback, owner):
    with pytest.raises(
        ConfigurationError,
        match=owner + r" monitors 'val_acc', but no metric of that name was "
        r"logged \(logged: train_loss, val_loss\)\. Log it with "
        r"self\.log\('val_acc', \.\.\.\)",
    ):
        fit(tmp_path, Net(), val=True, callbacks=[callback()])


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (
            lambda: ModelCheckpoint(mode="maximum"),
            r"ModelCheckpoint\(mode='maximum'\): choose 'min' or 'max'",
        ),
        (lambda: ModelCheckpoint(save_top_k=-2), r"ModelCheckpoint\(save_top_k=-2\)"),
        (lambda: ModelCheckpoint(every_n_train_steps=0), r"ModelCheckpoint\(every_n_train_steps=0\)"),
        (
            lambda: EarlyStopping(monitor="val_loss", mode="up"),
            r"EarlyStopping\(mode='up'\): choose 'min' or 'max'",
        ),
        (lambda: EarlyStopping(monitor="val_loss", patience=-1), r"EarlyStopping\(patience=-1\)"),
    ],
)
def test_bad_callback_arguments(make, pattern):
    with pytest.raises(ConfigurationError, match=pattern):
        make()


def test_callbacks_must_be_callbacks(tmp_path):
    with pytest.raises(ConfigurationError, match=r"callbacks must be Callback instances, got function"):
        Trainer(root_dir=tmp_path, progress=False, callbacks=[lambda trainer: None])


# ---------------------------------------------------------------------------------- non-finite
class NaNAtStep(Net):
    """The forward pass produces NaN at one global step (bad input, log of 0, ...)."""

    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.bad_step = bad_step

    def forward(self, x):
        out = super().forward(x)
        return out * float("nan") if self.global_step == self.bad_step else out


def test_nan_loss_names_step_batch_and_what_to_try(tmp_path):
    with pytest.raises(
        NonFiniteError,
        match=r"NaNAtStep\.training_step: the loss became nan at global step 5 "
        r"\(epoch 1, batch 1\); none of the parameters or gradients is "
        r"non-finite yet\. Try a lower learning rate",
    ):
        fit(tmp_path, NaNAtStep(bad_step=5), max_epochs=3)
    run = only_run(tmp_path)
    assert run.status == "failed"
    assert run.error["type"] == "NonFiniteError"
    assert "global step 5" in run.error["message"]
    # Nothing logged before the failure is lost.
    assert [r["step"] for r in run.metrics if "train_loss" in r] == [1, 2, 3, 4, 5]


class PoisonedHead(Net):
    """A parameter goes NaN (as after a diverging update) at one step."""

    def training_step(self, batch, batch_idx):
        if self.global_step == 2:
            with torch.no_grad():
                self.head.weight[0, 0] = float("nan")
        return super().training_step(batch, batch_idx)


def test_nan_loss_names_the_first_non_finite_parameter(tmp_path):
    with pytest.raises(
        NonFiniteError,
        match=r"loss became nan at global step 2 \(epoch 0, batch 2\); first "
        r"non-finite parameter: head\.weight",
    ):
        fit(tmp_path, PoisonedHead())
    assert only_run(tmp_path).error["type"] == "NonFiniteError"


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class InfGradientAtStep(Net):
    """The loss stays finite but its gradient overflows at global step 2."""

    def forward(self, x):
        hidden = torch.tanh(self.body(x))
        if self.global_step == 2:
            hidden = _InfGrad.apply(hidden)
        return self.head(hidden)


def test_inf_gradient_with_clipping_names_the_gradient_norm(tmp_path):
    with pytest.raises(
        NonFiniteError,
        match=r"the gradient norm became (inf|nan) at global step 2 \(epoch 0, "
        r"batch 2\); first non-finite gradient: body\.weight",
    ):
        fit(tmp_path, InfGradientAtStep(), gradient_clip_val=1.0)
    run = only_run(tmp_path)
    assert run.status == "failed"
    assert run.error["type"] == "NonFiniteError"


def test_inf_gradient_without_clipping_is_caught_at_the_next_step(tmp_path):
    # Without clipping, gradients are not inspected every step (that would cost a sync); the
    # update poisons the weights and the next loss names the parameter that went non-finite.
    with pytest.raises(
        NonFiniteError,
        match=r"global step 3 \(epoch 0, batch 3\); first non-finite parameter: "
        r"body\.weight",
    ):
        fit(tmp_path, InfGradientAtStep())


# ---------------------------------------------------------------------------------- Trainer options
@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (
            {"devices": 10_000, "accelerator": "cpu"},
            rf"devices=10000 but this machine has {os.cpu_count()} CPU cores\. Use devices={os.cpu_count()} or fewer",
        ),
        pytest.param(
            {"devices": 2, "accelerator": "cpu"},
            r"devices=2 .*needs 2 processes.*`torchrun --nproc_per_node 2 your_script\.py`.*devices=1",
            marks=pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores"),
        ),
        ({"devices": 0}, r"devices must be 'auto', a positive integer or a list of GPU indices, got 0"),
        (
            {"devices": [0], "accelerator": "cpu"},
            r"devices=\[0\] lists GPU indices, but the accelerator is cpu",
        ),
        ({"num_nodes": 0}, r"num_nodes must be a positive integer, got 0"),
        (
            {"accelerator": "tpu"},
            r"accelerator='tpu' is not supported\. Choose one of 'auto', 'cpu', 'cuda', 'gpu'",
        ),
        (
            {"precision": "fp8"},
            r"precision='fp8' is not supported\. Choose one of '32-true', 'bf16-mixed', "
            r"'16-mixed'",
        ),
        (
            {"strategy": "deepspeed"},
            r"strategy='deepspeed' is not supported\. Choose one of 'auto', 'single', 'ddp'",
        ),
        (
            {"val_check_interval": 0},
            r"val_check_interval must be a fraction of an epoch in \(0, 1\] or a number of "
            r"batches ≥ 1, got 0",
        ),
        ({"val_check_interval": 1.5}, r"val_check_interval must be .* got 1\.5"),
        ({"val_check_interval": "half"}, r"val_check_interval must be .* got 'half'"),
        (
            {"limit_train_batches": -1},
            r"limit_train_batches must be a fraction in \[0, 1\], a number of batches, or "
            r"None; got -1",
        ),
        ({"limit_val_batches": 2.0}, r"limit_val_batches must be a fraction in \[0, 1\].* got 2\.0"),
        ({"accumulate_grad_batches": 0}, r"accumulate_grad_batches must be a positive integer, got 0"),
        ({"accumulate_grad_batches": 1.5}, r"accumulate_grad_batches must be a positive integer, got 1\.5"),
        ({"check_val_every_n_epoch": 0}, r"check_val_every_n_epoch must be a positive integer, got 0"),
        ({"max_epochs": -1}, r"max_epochs must be a non-negative integer or None, got -1"),
        ({"max_steps": -5}, r"max_steps must be -1 \(no limit\) or a non-negative integer, got -5"),
        ({"gradient_clip_val": 0}, r"gradient_clip_val must be positive or None, got 0"),
        ({"progress": "fancy"}, r"progress='fancy'; choose 'auto', 'bar', 'lines' or False"),
        ({"seed": -1}, r"seed must be an integer between 0 and 4294967295, got -1"),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else "",
)
def test_bad_trainer_option(tmp_path, kwargs, pattern):
    with pytest.raises(ConfigurationError, match=pattern):
        Trainer(**{"root_dir": tmp_path, "progress": False, **kwargs})
    assert not list_runs(tmp_path)  # nothing was started


def test_val_check_interval_longer_than_an_epoch(tmp_path):
    with pytest.raises(
        ConfigurationError,
        match=r"val_check_interval=10 batches is more than the 4 training "
        r"batches of an epoch\. Use a smaller number, or a fraction",
    ):
        fit(tmp_path, Net(), val=True, val_check_interval=10)


def test_empty_training_data(tmp_path):
    empty = DataLoader(TensorDataset(X[:0], Y[:0]), batch_size=4)
    with pytest.raises(
        ConfigurationError,
        match=r"the training DataLoader yields no batches \(empty dataset or "
        r"limit_train_batches=0\)",
    ):
        Trainer(root_dir=tmp_path, progress=False, max_epochs=1).fit(Net(), empty)


# ---------------------------------------------------------------------------------- checkpoints
@pytest.fixture
def last_ckpt(tmp_path) -> Path:
    trainer = fit(tmp_path, Net(hidden=4), name="src", max_epochs=1)
    return trainer.checkpoint_dir / "last.ckpt"


class Arbitrary:
    """Any Python object: a safe (weights_only) load must refuse to rebuild it."""

    def __init__(self) -> None:
        self.payload = "runs code on load"


def test_resume_from_a_truncated_checkpoint(tmp_path, last_ckpt):
    raw = last_ckpt.read_bytes()
    last_ckpt.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"last\.ckpt is corrupt or truncated and cannot be read"):
        fit(tmp_path, Net(hidden=4), name="src", ckpt_path="last")


def test_resume_from_garbage(tmp_path):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(b"\x00not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match=r"garbage\.ckpt is corrupt or truncated"):
        fit(tmp_path, Net(), ckpt_path=path)


def test_resume_from_a_foreign_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(Net().state_dict(), path)
    with pytest.raises(
        CheckpointError,
        match=r"weights\.pt is not a lightning_lab checkpoint \(its keys are "
        r"\['body\.bias', .*model\.load_state_dict\(torch\.load\(path, "
        r"weights_only=True\)\)",
    ):
        fit(tmp_path, Net(), ckpt_path=path)


def test_resume_from_a_file_that_is_not_a_dict(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match=r"tensor\.pt holds a Tensor, not a dict of states"):
        fit(tmp_path, Net(), ckpt_path=path)


def test_resume_into_a_different_architecture(tmp_path, last_ckpt):
    before = load_run(last_ckpt.parent.parent)
    with pytest.raises(
        CheckpointError,
        match=r"last\.ckpt does not fit Net: size mismatch for body\.weight.*"
        r"size mismatch for head\.weight.*Was it saved from a different "
        r"model\? The checkpoint was saved with hparams \{'hidden': 4\}",
    ):
        fit(tmp_path, Net(hidden=6), name="src", ckpt_path="last")
    # The refused resume did not touch the run it would have continued.
    after = load_run(last_ckpt.parent.parent)
    assert after.status == "completed"
    assert after.metrics == before.metrics
    assert "resumes" not in after.info


def test_resume_into_a_model_with_other_layers(tmp_path, last_ckpt):
    class Wider(Net):
        def __init__(self) -> None:
            super().__init__(hidden=4)
            self.extra = nn.Linear(1, 1)

    with pytest.raises(
        CheckpointError,
        match=r"does not fit Wider: missing \['extra\.weight', 'extra\.bias'\], "
        r"unexpected \[\]",
    ):
        fit(tmp_path, Wider(), ckpt_path=last_ckpt)


def test_resume_from_a_pickle_with_python_objects_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"format": "lightning_lab.checkpoint", "x": Arbitrary()}, path)
    with pytest.raises(
        CheckpointError,
        match=r"evil\.ckpt holds a Python object \(.*Arbitrary\) that a safe load refuses.*only "
        r"loads checkpoints of tensors and plain data",
    ):
        fit(tmp_path, Net(), ckpt_path=path)


def test_eval_from_a_foreign_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(Net().state_dict(), path)
    with pytest.raises(CheckpointError, match=r"not a lightning_lab checkpoint"):
        Trainer(root_dir=tmp_path, progress=False).validate(Net(), data(), ckpt_path=path)


# ---------------------------------------------------------------------------------- misuse
def test_fit_with_a_plain_module(tmp_path):
    with pytest.raises(
        UserCodeError,
        match=r"trainer\.fit expects a LabModule, got Linear\. Subclass "
        r"lightning_lab\.LabModule",
    ):
        Trainer(root_dir=tmp_path, progress=False).fit(nn.Linear(3, 1), data())


def test_fit_without_data(tmp_path):
    with pytest.raises(
        ConfigurationError,
        match=r"trainer\.fit got no training data: pass "
        r"train_dataloaders=DataLoader\(\.\.\.\) or a datamodule",
    ):
        Trainer(root_dir=tmp_path, progress=False).fit(Net())
    assert not list_runs(tmp_path)


def test_test_and_predict_without_data(tmp_path):
    class WithTest(Net):
        def test_step(self, batch, batch_idx):
            pass

    with pytest.raises(ConfigurationError, match=r"trainer\.test got no data: .*test_dataloader\(\)"):
        Trainer(root_dir=tmp_path, progress=False).test(WithTest())
    with pytest.raises(ConfigurationError, match=r"trainer\.predict got no data: .*predict_dataloader\(\)"):
        Trainer(root_dir=tmp_path, progress=False).predict(Net())


def test_validate_without_validation_step(tmp_path):
    class NoValidation(LabModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 1)

    with pytest.raises(
        UserCodeError,
        match=r"trainer\.validate needs NoValidation\.validation_step\(self, batch, "
        r"batch_idx\)",
    ):
        Trainer(root_dir=tmp_path, progress=False).validate(NoValidation(), data())


def test_save_hyperparameters_outside_init():
    class Late(Net):
        def configure(self, lr):
            self.save_hyperparameters()

    with pytest.raises(UserCodeError, match=r"Late\.save_hyperparameters\(\) must be called from __init__"):
        Late().configure(0.1)


def test_save_hyperparameters_of_an_unknown_argument():
    class Picky(LabModule):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters("learning_rate")

    with pytest.raises(
        UserCodeError,
        match=r"Picky\.save_hyperparameters got \['learning_rate'\], which are not "
        r"arguments of __init__ \(it has \['lr'\]\)",
    ):
        Picky()


def test_self_trainer_outside_a_trainer():
    with pytest.raises(
        LabError,
        match=r"Net is not attached to a Trainer: `self\.trainer` exists only inside "
        r"trainer\.fit",
    ):
        _ = Net().trainer


def test_datamodule_and_loaders_together(tmp_path):
    from lightning_lab import LabDataModule

    class DM(LabDataModule):
        def train_dataloader(self):
            return data()

    with pytest.raises(ConfigurationError, match=r"pass either train_dataloaders or datamodule, not both"):
        Trainer(root_dir=tmp_path, progress=False).fit(Net(), data(), datamodule=DM())
    with pytest.raises(
        ConfigurationError,
        match=r"train_dataloaders got a LabDataModule; pass it as "
        r"datamodule=\.\.\. instead",
    ):
        Trainer(root_dir=tmp_path, progress=False).fit(Net(), DM())


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is not None,
    reason="tensorboard is installed here, so TensorBoardLogger works and cannot refuse",
)
def test_tensorboard_logger_without_tensorboard():
    from lightning_lab.loggers import TensorBoardLogger

    with pytest.raises(
        ConfigurationError,
        match=r"TensorBoardLogger needs the tensorboard package, which is not "
        r"installed\. Install it with `pip install "
        r"'lightning-lab\[tensorboard\]'`",
    ):
        TensorBoardLogger()


def test_resume_with_a_different_optimizer_says_so(tmp_path, last_ckpt):
    class AdamNet(Net):
        def configure_optimizers(self):
            return torch.optim.Adam([{"params": [self.body.weight]}, {"params": [self.body.bias, *self.head.parameters()]}], lr=1e-3)

    with pytest.raises(CheckpointError, match=r"saved optimizer state does not fit the Adam.*AdamNet\.configure_optimizers"):
        fit(tmp_path, AdamNet(), ckpt_path=last_ckpt)
