"""Optimization insight: where each batch's time goes, the advice it turns into, and every view of it."""

from __future__ import annotations

import io
import json
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_lab import LabModule, Trainer
from lightning_lab.callbacks import Callback
from lightning_lab.engine import timing
from lightning_lab.engine.advice import Setup, advise
from lightning_lab.engine.progress import TextProgress
from lightning_lab.runs import load_run
from lightning_lab.runs.insight import PHASES, Insight
from lightning_lab.runs.table import runs_table

FEATURES = 4


class SlowSamples(Dataset):
    """A regression dataset whose ``__getitem__`` sleeps: loading it is the bottleneck."""

    def __init__(self, n: int, sleep: float) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, FEATURES, generator=g)
        self.y = self.x @ torch.arange(1.0, FEATURES + 1)
        self.sleep = sleep

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        time.sleep(self.sleep)
        return self.x[i], self.y[i]


class Regressor(LabModule):
    def __init__(self, step_sleep: float = 0.0, optimizer_sleep: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Linear(FEATURES, 1)
        self.step_sleep = step_sleep
        self.optimizer_sleep = optimizer_sleep

    def training_step(self, batch, batch_idx):
        if self.step_sleep:
            time.sleep(self.step_sleep)
        x, y = batch
        loss = F.mse_loss(self.layer(x).squeeze(-1), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return _SlowSGD(self.parameters(), lr=0.01, sleep=self.optimizer_sleep)


class _SlowSGD(torch.optim.SGD):
    def __init__(self, params, lr: float, sleep: float) -> None:
        super().__init__(params, lr=lr)
        self.sleep = sleep

    def step(self, closure=None):
        if self.sleep:
            time.sleep(self.sleep)
        return super().step(closure)


class SlowCallback(Callback):
    """Framework work that takes time: sleeps after every batch, and notes when each batch ended."""

    def __init__(self, sleep: float) -> None:
        self.sleep = sleep
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        time.sleep(self.sleep)
        self.ends.append(time.perf_counter())


def train(tmp_path, dataset, *, workers: int = 0, batch_size: int = 4, epochs: int = 1, model=None, **options):
    options.setdefault("progress", False)
    options.setdefault("enable_checkpointing", False)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0)
    trainer = Trainer(max_epochs=epochs, root_dir=tmp_path, **options)
    trainer.fit(model or Regressor(), loader)
    return trainer


# -- the engine measures ---------------------------------------------------------------------------


def test_a_data_bound_run_says_so_and_names_num_workers(tmp_path):
    trainer = train(tmp_path, SlowSamples(48, sleep=0.002), model=Regressor(step_sleep=0.004))
    insight = trainer.insight
    assert insight.bound == "data"
    assert insight.shares["data"] > 0.4
    assert insight.advice and "num_workers=" in insight.advice[0] and "(now 0)" in insight.advice[0]
    # The same summary is in run.json, for every view to read.
    saved = Insight.from_dict(load_run(trainer.run_dir).info["insight"])
    assert saved.bound == "data" and saved.advice == insight.advice
    assert saved.batches == 11  # 12 batches, the first (warm-up) left out
    assert saved.samples_per_s == pytest.approx(saved.steps_per_s * 4, rel=1e-3)


def test_adding_workers_lowers_the_data_share(tmp_path):
    # 20 ms to load a batch of 4, 30 ms to train on it, 64 batches. Two workers could hide the loading
    # entirely; on a busy 2-core machine they are themselves delayed, so the test asks for a clear
    # drop rather than for none at all.
    data = SlowSamples(256, sleep=0.005)
    without = train(tmp_path / "a", data, model=Regressor(step_sleep=0.03)).insight
    with_workers = train(tmp_path / "b", data, workers=2, model=Regressor(step_sleep=0.03)).insight
    assert without.shares["data"] > 0.25
    assert with_workers.shares["data"] < 0.75 * without.shares["data"], (with_workers.shares, without.shares)
    assert not any("num_workers=2" in tip for tip in with_workers.advice)  # never what is already set


def test_measured_phases_add_up_to_the_batch_time(tmp_path):
    slow = SlowCallback(sleep=0.002)
    trainer = train(tmp_path, SlowSamples(16, sleep=0.003), batch_size=1,
                    model=Regressor(step_sleep=0.004, optimizer_sleep=0.002), callbacks=[slow])
    phases = trainer.insight.phases_ms
    assert set(phases) == set(PHASES)
    # Each sleep shows up in its own phase (sleeps overshoot on a busy machine, never undershoot).
    assert 3.0 <= phases["data"] < 3.0 + 4.0
    assert 4.0 <= phases["compute"] < 4.0 + 4.0
    assert 2.0 <= phases["optimizer"] < 2.0 + 4.0
    assert 2.0 <= phases["framework"] < 2.0 + 4.0
    # ...and together they are the time between two batch ends, measured independently.
    independent_ms = (slow.ends[-1] - slow.ends[0]) / (len(slow.ends) - 1) * 1e3
    assert sum(phases.values()) == pytest.approx(independent_ms, rel=0.10)


def test_validation_is_not_counted_in_the_batch_phases(tmp_path):
    class Validated(Regressor):
        def validation_step(self, batch, batch_idx):
            time.sleep(0.01)

    loader = DataLoader(SlowSamples(8, sleep=0.0), batch_size=1)
    trainer = Trainer(max_epochs=1, root_dir=tmp_path, progress=False, enable_checkpointing=False,
                      val_check_interval=2)
    trainer.fit(Validated(), loader, loader)
    insight = trainer.insight
    assert insight.validation_s >= 3 * 8 * 0.01  # 4 validations; the first batch's is in its warm-up
    assert insight.batch_ms < 10


def test_sys_records_go_to_metrics_jsonl_but_not_to_the_model_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(timing, "EMIT_INTERVAL_S", 0.05)
    trainer = train(tmp_path, SlowSamples(48, sleep=0.003))
    sys_records = [r for r in load_run(trainer.run_dir).metrics if "sys/batch_ms" in r]
    assert len(sys_records) >= 2
    record = sys_records[-1]
    assert {"step", "epoch", "time", "sys/data_ms", "sys/compute_ms", "sys/framework_ms", "sys/steps_per_s",
            "sys/samples_per_s", "sys/peak_memory_mb"} <= set(record)
    assert any("num_workers" in tip for tip in record["sys/advice"])
    assert all(not any(k.startswith("sys/") for k in r) for r in load_run(trainer.run_dir).metrics
               if "train_loss" in r)  # training records stay as the model logged them
    assert not any(k.startswith("sys/") for k in trainer.callback_metrics)
    assert not any(k.startswith("sys/") for k in json.loads((trainer.run_dir / "run.json").read_text())["final"])


def test_scripts_print_where_the_time_went_at_the_end(tmp_path):
    stream = io.StringIO()
    train(tmp_path, SlowSamples(24, sleep=0.002), progress=TextProgress(mode="lines", stream=stream))
    out = stream.getvalue()
    assert "where the time goes" in out and "data wait" in out
    assert "advice: data-bound" in out and "num_workers=" in out


def test_framework_heavy_runs_are_told_to_log_or_checkpoint_less(tmp_path):
    trainer = train(tmp_path, SlowSamples(24, sleep=0.0), callbacks=[SlowCallback(sleep=0.005)])
    assert trainer.insight.bound == "framework"
    assert any("log_every_n_steps=50 (now 1)" in tip for tip in trainer.insight.advice)


def test_runs_table_shows_the_summary(tmp_path):
    trainer = train(tmp_path, SlowSamples(24, sleep=0.002))
    table = runs_table([load_run(trainer.run_dir)])
    assert "time goes" in table.splitlines()[0]
    assert "data-bound" in table


def test_peak_memory_is_the_process_peak_on_cpu(tmp_path):
    insight = train(tmp_path, SlowSamples(8, sleep=0.0)).insight
    assert insight.memory_kind == "rss"
    assert 10 < insight.peak_memory_mb < 1e6


def test_cuda_phases_come_from_sampled_events_read_only_once_complete():
    """On CUDA one batch in N records events; they are read when done (``query``), never synchronized."""

    class FakeEvent:
        clock = 0.0
        done = False
        synchronized = 0

        def __init__(self, enable_timing):
            self.at = None

        def record(self):
            FakeEvent.clock += 1.0  # each phase takes 1 ms of device time
            self.at = FakeEvent.clock

        def query(self):
            return FakeEvent.done

        def synchronize(self):
            FakeEvent.synchronized += 1

        def elapsed_time(self, end):
            return end.at - self.at

    events = timing.CudaEvents(torch.device("cpu"), every=2)  # the device only matters to torch.cuda calls
    events._torch = type("FakeTorch", (), {"cuda": type("FakeCuda", (), {"Event": FakeEvent})})
    for _ in range(4):
        for mark in range(4):
            events.mark(mark)
    events.collect()
    assert events.samples == 0 and FakeEvent.synchronized == 0  # not complete yet: nothing read, no wait
    FakeEvent.done = True
    events.collect()
    assert events.samples == 2  # batches 2 and 4 were sampled
    assert events.phases_ms() == {"transfer": 1.0, "compute": 1.0, "optimizer": 1.0}
    assert FakeEvent.synchronized == 0


# -- the profiler ---------------------------------------------------------------------------------


def test_profile_writes_a_chrome_trace_and_the_top_operators(tmp_path):
    stream = io.StringIO()
    trainer = train(tmp_path, SlowSamples(64, sleep=0.0), profile=True,
                    progress=TextProgress(mode="lines", stream=stream))
    trace = trainer.run_dir / "profile" / "trace.json"
    events = json.loads(trace.read_text())
    assert events["traceEvents"]
    profile = load_run(trainer.run_dir).info["insight"]["profile"]
    assert profile["trace"] == "profile/trace.json" and profile["batches"] == 5
    ops = profile["top_ops"]
    assert ops and ops == sorted(ops, key=lambda op: -op["self_ms"])
    assert any(op["name"].startswith("aten::") for op in ops)
    assert "top operators by self CPU time over 5 profiled batches" in stream.getvalue()
    assert (trainer.run_dir / "profile" / "top_ops.txt").read_text().strip()
    # The profiled batches (slowed down by the profiler) are not in the time shares.
    assert trainer.insight.batches == 16 - 1 - 6


def test_profiler_options_are_checked():
    from lightning_lab.engine.profiling import Profiler
    from lightning_lab.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"Profiler\(active=0\): profile at least 1 batch"):
        Profiler(active=0)
    with pytest.raises(ConfigurationError, match=r"Profiler\(skip=-1\)"):
        Profiler(skip=-1)


# -- the advice rules -----------------------------------------------------------------------------


def test_data_rule_names_the_loader_options_and_their_values():
    tips = advise({"data": 0.5, "compute": 0.5}, Setup(device_type="cuda", num_workers=2, pin_memory=False,
                                                      persistent_workers=False, cpu_count=16))
    assert tips == ["data-bound: 50% of each batch waits for the next batch. In the DataLoader set num_workers=4 "
                    "(now 2), pin_memory=True (now False), persistent_workers=True (now False)."]
    assert advise({"data": 0.15, "compute": 0.85}, Setup(num_workers=0)) == []
    plain = advise({"data": 0.5, "compute": 0.5}, Setup(num_workers=None))
    assert "use a torch DataLoader with num_workers > 0" in plain[0]
    # Workers already on every core, persistent: nothing left to set, so the tip says what else helps.
    (busy,) = advise({"data": 0.5, "compute": 0.5}, Setup(num_workers=2, persistent_workers=True, cpu_count=2))
    assert "num_workers=" not in busy and "(now" not in busy
    assert "already runs 2 worker processes on 2 CPU cores" in busy and "cheaper to load" in busy
    (more,) = advise({"data": 0.5, "compute": 0.5}, Setup(num_workers=2, persistent_workers=True, cpu_count=8))
    assert more.endswith("In the DataLoader set num_workers=4 (now 2).")


def test_framework_rule_names_logging_and_checkpoint_cadence():
    tips = advise({"framework": 0.4, "compute": 0.6}, Setup(log_every_n_steps=1, checkpoint_every_n_steps=5))
    assert len(tips) == 1
    assert "log_every_n_steps=50 (now 1)" in tips[0]
    assert "ModelCheckpoint(every_n_train_steps=50) (now 5)" in tips[0]
    assert "every epoch" in advise({"framework": 0.4}, Setup())[0]
    assert advise({"framework": 0.1, "compute": 0.9}, Setup()) == []


def test_bf16_rule_only_for_fp32_on_a_bf16_capable_gpu():
    shares = {"compute": 0.9, "framework": 0.1}
    assert any('precision="bf16-mixed"' in t for t in advise(shares, Setup(device_type="cuda", bf16_supported=True)))
    assert advise(shares, Setup(device_type="cuda", bf16_supported=True, precision="bf16-mixed")) == []
    assert advise(shares, Setup(device_type="cuda", bf16_supported=False)) == []
    assert advise(shares, Setup(device_type="cpu")) == []


def test_allreduce_rule_suggests_accumulation_under_ddp():
    shares = {"compute": 0.9, "framework": 0.1}
    tips = advise(shares, Setup(world_size=4, accumulate_grad_batches=1), allreduce_share=0.35)
    assert tips and "accumulate_grad_batches=4 (now 1)" in tips[0] and "35%" in tips[0]
    assert advise(shares, Setup(world_size=4), allreduce_share=0.05) == []
    assert advise(shares, Setup(world_size=1), allreduce_share=0.5) == []


def test_advice_is_short_and_the_biggest_waste_comes_first():
    tips = advise({"data": 0.3, "framework": 0.5, "compute": 0.2},
                  Setup(device_type="cuda", bf16_supported=True, num_workers=0, world_size=2),
                  allreduce_share=0.25)
    assert len(tips) == 3
    assert tips[0].startswith("50% of each batch is logging")
    assert tips[1].startswith("data-bound: 30%")


def test_insight_round_trips_through_run_json_and_reads_compactly():
    insight = Insight(phases_ms={"data": 6.0, "transfer": 0.0, "compute": 3.0, "optimizer": 0.5, "framework": 0.5},
                      batch_ms=10.0, batches=100, steps_per_s=100.0, samples_per_s=3200.0, advice=["x"])
    data = json.loads(json.dumps(insight.to_dict()))
    assert data["bound"] == "data" and data["shares"]["data"] == pytest.approx(0.6)
    back = Insight.from_dict(data)
    assert back.compact() == "data-bound 60% · 3,200 samples/s"
    assert "data wait 60%" in back.text() and "advice: x" in back.text()


# -- the learning-rate finder -----------------------------------------------------------------------


def _regression_loader(seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, FEATURES, generator=g)
    y = x @ torch.arange(1.0, FEATURES + 1) + 0.1 * torch.randn(256, generator=g)
    return DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)


class LinearRegression(LabModule):
    def __init__(self, lr: float = 0.01, momentum: float = 0.0) -> None:
        super().__init__()
        self.lr = lr
        self.layer = nn.Linear(FEATURES, 1)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=lr, momentum=momentum)  # kept by the model

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.layer(x).squeeze(-1), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return self.optimizer


def _final_loss(lr: float, tmp_path) -> float:
    torch.manual_seed(0)
    trainer = Trainer(max_epochs=3, root_dir=tmp_path, progress=False, enable_checkpointing=False)
    trainer.fit(LinearRegression(lr), _regression_loader())
    return trainer.callback_metrics["train_loss"]


def test_find_lr_suggests_a_rate_that_trains_well_and_restores_everything(tmp_path):
    torch.manual_seed(0)
    model = LinearRegression(lr=0.01)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    result = Trainer(progress=False).find_lr(model, _regression_loader(), num_steps=100)

    assert result.suggestion is not None
    assert len(result.lrs) == len(result.losses) <= 100
    assert result.lrs == sorted(result.lrs) and result.lrs[0] == pytest.approx(1e-7)
    # The suggestion is within a decade of a rate that trains this regression well...
    good = 0.1
    assert _final_loss(good, tmp_path / "good") < 0.05
    assert good / 10 <= result.suggestion <= good * 10
    # ...and itself trains it (far better than a rate a hundred times smaller).
    assert _final_loss(result.suggestion, tmp_path / "s") < 0.1 * _final_loss(result.suggestion / 100, tmp_path / "t")
    # The sweep left no trace: weights, optimizer rate, RNG, mode, logging.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.optimizer.param_groups[0]["lr"] == 0.01
    assert torch.equal(torch.get_rng_state(), rng)
    assert not model.training
    assert getattr(model, "_trainer", None) is None


def test_find_lr_restores_an_optimizer_the_model_keeps():
    model = LinearRegression(lr=0.01, momentum=0.9)
    Trainer(progress=False).find_lr(model, _regression_loader(), num_steps=20)
    assert model.optimizer.state_dict()["state"] == {}  # no momentum buffers left behind
    assert model.optimizer.param_groups[0]["lr"] == 0.01


def test_find_lr_plots_loss_against_rate(tmp_path):
    result = Trainer(progress=False).find_lr(LinearRegression(), _regression_loader(), num_steps=30)
    figure = result.plot()
    ax = figure.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "learning rate"
    assert result.png().startswith(b"\x89PNG")
    assert "suggestion" in repr(result)


def test_find_lr_stops_when_the_loss_diverges():
    result = Trainer(progress=False).find_lr(LinearRegression(), _regression_loader(), min_lr=1e-3, max_lr=1e3,
                                             num_steps=100)
    assert result.stopped_early and len(result.lrs) < 100
    assert result.suggestion is not None and result.suggestion < 1.0


@pytest.mark.parametrize(("options", "message"), [
    ({"min_lr": 0.0}, r"find_lr\(min_lr=0.0\): the smallest rate must be a positive number"),
    ({"min_lr": 1e-2, "max_lr": 1e-3}, r"find_lr\(max_lr=0.001\): the largest rate must be greater than min_lr"),
    ({"num_steps": 2}, r"find_lr\(num_steps=2\): sweep at least 5 steps"),
    ({"early_stop_threshold": 0.5}, r"find_lr\(early_stop_threshold=0.5\): use a factor above 1"),
])
def test_find_lr_refuses_ranges_that_cannot_work(options, message):
    from lightning_lab.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=message):
        Trainer(progress=False).find_lr(LinearRegression(), _regression_loader(), **options)


def test_find_lr_needs_training_data():
    from lightning_lab.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"trainer.find_lr got no training data"):
        Trainer(progress=False).find_lr(LinearRegression())


def test_a_running_runs_final_metrics_leave_out_the_sys_records(tmp_path):
    from lightning_lab.runs import RunWriter

    writer = RunWriter.create(tmp_path, "live", {})
    writer.log({"step": 1, "epoch": 0, "time": 1.0, "train_loss": 0.5})
    writer.log({"step": 1, "epoch": 0, "time": 2.0, "sys/batch_ms": 3.0, "sys/advice": ["x"]})
    writer.flush()
    run = load_run(writer.path)
    assert run.status == "running" and run.final == {"train_loss": 0.5}
    assert "sys/" not in runs_table([run])
    writer.close("completed", final={"train_loss": 0.5})
