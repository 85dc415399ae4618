"""The Engine used by hand (a custom loop), in one process: placement, precision, data, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_lab import Engine
from lightning_lab.engine.environment import detect_environment, expand_hostlist
from lightning_lab.errors import CheckpointError, ConfigurationError


def data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    return DataLoader(TensorDataset(x, x.sum(-1, keepdim=True)), batch_size=8, shuffle=True)


def train(engine: Engine, epochs: int = 30) -> tuple[nn.Module, torch.optim.Optimizer, float]:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    model, optimizer = engine.setup(model, torch.optim.SGD(model.parameters(), lr=0.05))
    loader = engine.setup_dataloaders(data(), seed=1)
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        for x, y in loader:
            with engine.autocast():
                loss = F.mse_loss(model(x).float(), y)
            engine.backward(loss)
            engine.clip_gradients(model, optimizer, max_norm=10.0)
            optimizer.step()
            optimizer.zero_grad()
    return model, optimizer, loss.item()


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_a_hand_written_loop_learns(precision):
    engine = Engine(accelerator="cpu", precision=precision)
    assert engine.device == torch.device("cpu") and engine.world_size == 1 and engine.is_global_zero
    _, _, loss = train(engine)
    assert loss < 0.05


def test_loader_order_is_seeded_and_changes_per_epoch():
    engine = Engine(accelerator="cpu")
    first = engine.setup_dataloaders(data(), seed=5)
    second = engine.setup_dataloaders(data(), seed=5)
    epoch0 = [x.clone() for x, _ in first]
    assert all(torch.equal(a, b) for a, b in zip(epoch0, [x for x, _ in second], strict=True))
    epoch1 = [x for x, _ in first]
    assert not all(torch.equal(a, b) for a, b in zip(epoch0, epoch1, strict=True))


def test_save_and_load_round_trip(tmp_path):
    engine = Engine(accelerator="cpu")
    model, optimizer, _ = train(engine, epochs=2)
    path = tmp_path / "state.ckpt"
    engine.save(path, {"model": model, "optimizer": optimizer, "step": 12})
    assert torch.load(path, weights_only=True)["step"] == 12
    fresh = nn.Linear(3, 1)
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.05)
    state = {"model": fresh, "optimizer": fresh_opt, "step": 0}
    rest = engine.load(path, state)
    assert rest == {} and state["step"] == 12
    assert torch.equal(fresh.weight, model.weight)
    with pytest.raises(CheckpointError, match="has no entry 'missing'"):
        engine.load(path, {"missing": fresh})


def test_single_process_collectives_are_identities():
    engine = Engine(accelerator="cpu")
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(engine.all_reduce(t, op="sum"), t)
    assert engine.all_gather(t).shape == (1, 2)
    assert engine.broadcast({"a": 1}) == {"a": 1}
    with pytest.raises(ConfigurationError, match="choose one of"):
        engine.all_reduce(t, op="median")


def test_environment_detection():
    torchrun = detect_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                                   "MASTER_ADDR": "n1", "MASTER_PORT": "1234"})
    assert (torchrun.kind, torchrun.global_rank, torchrun.local_rank, torchrun.world_size) == ("torchrun", 3, 1, 4)
    slurm = detect_environment({"SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_LOCALID": "0",
                                "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "train"})
    assert (slurm.kind, slurm.global_rank, slurm.master_addr) == ("slurm", 2, "gpu07")
    assert detect_environment({"SLURM_NTASKS": "4", "SLURM_PROCID": "0", "SLURM_JOB_NAME": "bash"}).kind == "single"
    assert detect_environment({}).kind == "single"
    assert expand_hostlist("n[1-3,7],login") == ["n1", "n2", "n3", "n7", "login"]
