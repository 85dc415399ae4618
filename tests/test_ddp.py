"""Real multi-process DDP: 2 CPU processes under torchrun (gloo) against 1 process.

``tests/ddp_worker.py`` runs every scenario twice with the same arguments: once with plain
``python`` (1 process) and once under ``python -m torch.distributed.run --nproc_per_node 2``.
Its batch sizes are global (divided by the world size), so "2 processes × batch B" is compared
with "1 process × batch 2B", as SPEC "Launch backends" → "DDP correctness" requires. Both runs
are started once per test session (module fixture) and every test reads its scenario's results.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

WORKER = Path(__file__).resolve().with_name("ddp_worker.py")
TIMEOUT_S = 120
SCENARIOS = ("engine", "grad", "accum", "val", "resume")
TRAIN_SIZE, VAL_SIZE = 64, 37  # as in ddp_worker.py


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env() -> dict[str, str]:
    """This environment without launcher/run variables that would change what the worker detects."""
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
            "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items()
           if k not in drop and not k.startswith(("TORCHELASTIC_", "LIGHTNING_LAB_", "SLURM_"))}
    env["OMP_NUM_THREADS"] = "1"
    return env


@dataclass
class Launch:
    """One run of the worker: its output folder, captured output and rank-0 results."""

    label: str
    out: Path
    returncode: int | None
    output: str

    @property
    def results(self) -> dict[str, list[dict[str, Any]]]:
        path = self.out / "results.pt"
        return torch.load(path, weights_only=True) if path.is_file() else {}

    def report(self) -> str:
        return f"{self.label} exited with {self.returncode}; its output:\n{self.output[-12000:]}"

    def result(self, scenario: str) -> list[dict[str, Any]]:
        """``[rank 0's result, rank 1's, ...]`` for ``scenario``; fails with the output when missing."""
        results = self.results  # rewritten after each scenario: earlier ones survive a later failure
        assert scenario in results, self.report()
        return results[scenario]


def _start(cmd: list[str], out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*cmd, str(out), *SCENARIOS], cwd=WORKER.parent.parent, env=_clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _finish(label: str, proc: subprocess.Popen[str], out: Path) -> Launch:
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers: the group this test started
        output, _ = proc.communicate()
        output += f"\n[test_ddp] killed after {TIMEOUT_S} s"
    return Launch(label, out, proc.returncode, output)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Launch]:
    """The 2-process torchrun launch and the 1-process reference, run side by side."""
    base = tmp_path_factory.mktemp("ddp")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER)]
    ddp = _start(torchrun, base / "ddp")
    single = _start([sys.executable, str(WORKER)], base / "single")
    return {"ddp": _finish("torchrun --nproc_per_node 2", ddp, base / "ddp"),
            "single": _finish("single process", single, base / "single")}


def _assert_weights_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str,
                          atol: float = 1e-5) -> None:
    assert actual.keys() == expected.keys(), what
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=atol, rtol=0,
                                   msg=lambda m, k=key: f"{what}: {k}: {m}")


def _max_change(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _assert_ranks_agree(ranks: list[dict[str, Any]], key: str = "final") -> None:
    assert len(ranks) == 2, f"expected results from 2 ranks, got {len(ranks)}"
    for name, tensor in ranks[0][key].items():
        assert torch.equal(tensor, ranks[1][key][name]), f"rank 0 and rank 1 hold different {name} after training"


def test_ddp_fit_matches_one_process_with_twice_the_batch(runs):
    """2 processes × batch 4 (shuffled, 2 epochs, SGD, mean MSE) == 1 process × batch 8."""
    ddp, single = runs["ddp"].result("grad"), runs["single"].result("grad")[0]
    assert [r["world_size"] for r in ddp] == [2, 2] and single["world_size"] == 1
    assert [r["is_global_zero"] for r in ddp] == [True, False]
    _assert_weights_close(ddp[0]["initial"], single["initial"], "initial weights", atol=0)
    assert _max_change(single["final"], single["initial"]) > 1e-2, "training did not move the weights"
    _assert_ranks_agree(ddp)
    _assert_weights_close(ddp[0]["final"], single["final"], "2 × batch 4 vs 1 × batch 8")
    # 64 samples: 8 steps per epoch either way (each rank takes 32 of them in batches of 4).
    assert ddp[0]["global_step"] == single["global_step"] == 16
    for name in ("train_loss_step", "train_loss_epoch"):  # sync_dist=True: the loss of the global batch
        assert math.isclose(ddp[0]["callback_metrics"][name], single["callback_metrics"][name],
                            rel_tol=1e-5, abs_tol=1e-6), (name, ddp[0]["callback_metrics"], single["callback_metrics"])
        assert ddp[1]["callback_metrics"][name] == ddp[0]["callback_metrics"][name], name
    # An epoch-only metric logged from each rank's own samples: every sample counted once per epoch.
    expected_sq = sum(i * i for i in range(TRAIN_SIZE)) / TRAIN_SIZE
    for metrics in (ddp[0]["callback_metrics"], ddp[1]["callback_metrics"], single["callback_metrics"]):
        assert math.isclose(metrics["train_sq_index"], expected_sq, rel_tol=1e-12), metrics


def test_ddp_gradient_accumulation_matches_one_process_with_four_times_the_batch(runs):
    """accumulate_grad_batches=2 with 2 × batch 4 (no sync on the first micro-step) == 1 × batch 16."""
    ddp, single = runs["ddp"].result("accum"), runs["single"].result("accum")[0]
    assert [r["accumulate"] for r in ddp] == [2, 2] and single["accumulate"] == 1
    _assert_ranks_agree(ddp)
    _assert_weights_close(ddp[0]["final"], single["final"], "2 × batch 4 × accumulate 2 vs 1 × batch 16")
    assert ddp[0]["global_step"] == single["global_step"] == 8  # 4 optimizer steps per epoch
    assert math.isclose(ddp[0]["callback_metrics"]["train_loss_epoch"],
                        single["callback_metrics"]["train_loss_epoch"], rel_tol=1e-5)


def test_ddp_validation_metrics_count_every_sample_once(runs):
    """37 samples, batches of 5 per process: synced epoch metrics equal the 1-process ones."""
    ddp, single = runs["ddp"].result("val"), runs["single"].result("val")[0]
    _assert_ranks_agree(ddp)
    _assert_weights_close(ddp[0]["final"], single["final"], "weights before the final validation")
    # The evaluation sampler shards without padding: 19 + 18 samples, each exactly once.
    for key in ("fit_seen", "validate_seen"):
        seen0, seen1 = ddp[0][key], ddp[1][key]
        assert (len(seen0), len(seen1)) == (19, 18), key
        assert sorted(seen0 + seen1) == list(range(VAL_SIZE)), f"{key}: samples missing or seen twice"
    # mean(i²) over the 37 indices is 438; a padded duplicate of sample 0 would give 426.47, and an
    # unweighted mean of the two ranks' means 437.83: only a batch-size-weighted sum over ranks gives 438.
    expected_sq = sum(i * i for i in range(VAL_SIZE)) / VAL_SIZE
    validated = ddp[0]["validate"][0]
    for rank in ddp:
        for metrics in (rank["fit_metrics"], rank["validate"][0]):
            assert math.isclose(metrics["val_sq_index"], expected_sq, rel_tol=1e-12), metrics
            # every rank holds the same synced value, the one rank 0 recorded
            assert metrics["val_loss"] == validated["val_loss"], (rank["fit_metrics"], validated)
    assert math.isclose(single["fit_metrics"]["val_sq_index"], expected_sq, rel_tol=1e-12)
    for name in ("val_loss", "val_sq_index"):
        assert math.isclose(ddp[0]["fit_metrics"][name], single["fit_metrics"][name], rel_tol=1e-6, abs_tol=1e-6), (
            name, ddp[0]["fit_metrics"], single["fit_metrics"])
        assert math.isclose(validated[name], single["validate"][0][name], rel_tol=1e-6, abs_tol=1e-6), (
            name, validated, single["validate"])
    # trainer.validate after fit, on the same weights, reproduces the last validation of fit.
    assert math.isclose(validated["val_loss"], ddp[0]["fit_metrics"]["val_loss"], rel_tol=1e-12)


def test_ddp_run_directory_is_written_by_rank_zero_only(runs):
    """One run folder, whose run.json says torchrun × 2, completed; one metrics record per step."""
    launch = runs["ddp"]
    ddp = launch.result("grad")
    for finished in runs.values():  # torchrun's exit status is what a job scheduler sees
        assert finished.returncode == 0, finished.report()
    root = launch.out / "grad"
    runs_found = [p for p in root.glob("*/*") if p.is_dir()]
    assert len(runs_found) == 1, f"expected exactly one run folder under {root}, found {runs_found}"
    run_dir = runs_found[0]
    assert ddp[0]["run_dir"] == ddp[1]["run_dir"] == str(run_dir), "ranks disagree on the run directory"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["world_size"] == 2, info
    assert info["backend"] == "torchrun", info
    # Where the time went includes the gradient all-reduce wait DDP could not hide (gloo: measured).
    assert info["insight"]["allreduce_ms"] is not None and info["insight"]["allreduce_ms"] >= 0, info["insight"]
    # ... measured by hooks on the model's parameters that end with the fit: a re-fit does not pile them up.
    assert [r["grad_hooks_left"] for r in ddp] == [0, 0]
    assert info["status"] == "completed", info
    assert info["final"]["train_loss_epoch"] == pytest.approx(ddp[0]["callback_metrics"]["train_loss_epoch"])
    lines = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert lines, "metrics.jsonl is empty"
    records = [json.loads(line) for line in lines]
    step_records = [r for r in records if "train_loss_step" in r]
    # One record per optimizer step: a second writer (rank 1) would double them.
    assert len(step_records) == ddp[0]["global_step"] == 16, records
    assert len({r["step"] for r in step_records}) == 16, records
    assert len([r for r in records if "train_loss_epoch" in r]) == 2, records


def test_engine_by_hand_under_torchrun(runs):
    """Fabric-style Engine: collectives, barrier, save/load, and a hand loop equal to 1 process × 2B."""
    ddp, single = runs["ddp"].result("engine"), runs["single"].result("engine")[0]
    for rank, res in enumerate(ddp):
        assert (res["rank"], res["world_size"], res["is_global_zero"]) == (rank, 2, rank == 0)
        # rank r contributes [r + 1, 2(r + 1)]
        torch.testing.assert_close(res["all_reduce_sum"], torch.tensor([3.0, 6.0]))
        torch.testing.assert_close(res["all_reduce_mean"], torch.tensor([1.5, 3.0]))
        torch.testing.assert_close(res["all_reduce_max"], torch.tensor([2.0, 4.0]))
        torch.testing.assert_close(res["all_reduce_min"], torch.tensor([1.0, 2.0]))
        torch.testing.assert_close(res["local_after_reduce"], torch.tensor([rank + 1.0, 2.0 * (rank + 1)]))
        assert res["all_gather"].shape == (2, 3)
        torch.testing.assert_close(res["all_gather"], torch.tensor([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]]))
        assert res["all_gather_object"] == [{"rank": 0}, {"rank": 1}]
        assert res["broadcast"] == {"from": 0, "payload": [1, 2, 3]}
        assert res["broadcast_src_last"] == "rank1"
        assert res["marker_seen_after_barrier"], f"rank {rank} passed the barrier before rank 1 reached it"
        assert res["loader_len"] == single["loader_len"] == 8
        assert len(res["unseeded_indices"]) == TRAIN_SIZE // 2
        _assert_weights_close(res["saved"], res["final"], f"rank {rank}: engine.load of engine.save", atol=0)
    # setup_dataloaders without a seed: the ranks still split one shuffled order between them.
    unseeded = ddp[0]["unseeded_indices"] + ddp[1]["unseeded_indices"]
    assert sorted(unseeded) == list(range(TRAIN_SIZE)), "unseeded loaders: ranks overlap / miss samples"
    assert sorted(single["unseeded_indices"]) == list(range(TRAIN_SIZE))
    # 1 process: the collectives are the identity / a stack of one
    torch.testing.assert_close(single["all_reduce_sum"], torch.tensor([1.0, 2.0]))
    assert single["all_gather"].shape == (1, 3)
    assert single["broadcast"]["from"] == 0
    _assert_weights_close(ddp[0]["initial"], single["initial"], "initial weights", atol=0)
    assert _max_change(single["final"], single["initial"]) > 1e-2, "the hand loop did not move the weights"
    _assert_ranks_agree(ddp)
    _assert_weights_close(ddp[0]["final"], single["final"], "hand loop: 2 × batch 4 vs 1 × batch 8")


def test_ddp_resume_mid_epoch_continues_the_run(runs):
    """Stopped at step 5 of 8 (max_steps), resumed with ckpt_path="last": the uninterrupted result."""
    launch = runs["ddp"]
    ddp = launch.result("resume")
    uninterrupted = runs["single"].result("grad")[0]
    assert [r["stopped_at"] for r in ddp] == [5, 5]
    _assert_ranks_agree(ddp)
    _assert_weights_close(ddp[0]["final"], uninterrupted["final"], "resumed 2 × batch 4 vs uninterrupted 1 × batch 8")
    assert ddp[0]["global_step"] == 16
    # The resumed run continues the same directory and curve.
    assert ddp[0]["run_dir"] == ddp[0]["first_run_dir"] == ddp[1]["run_dir"]
    run_dir = Path(ddp[0]["run_dir"])
    assert [p for p in run_dir.parent.iterdir() if p.is_dir()] == [run_dir]
    info = json.loads((run_dir / "run.json").read_text())
    assert (info["status"], info["world_size"], info["backend"]) == ("completed", 2, "torchrun"), info
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in records if "train_loss_step" in r]
    assert steps == list(range(1, 17)), f"each step recorded once, in order: {steps}"
    assert math.isclose(ddp[0]["callback_metrics"]["train_loss_epoch"],
                        uninterrupted["callback_metrics"]["train_loss_epoch"], rel_tol=1e-5)
    # Epoch-only totals open at the checkpoint come back on the rank that accumulated them:
    # each epoch still counts every sample once (rank 0's share twice would give another value).
    epoch_records = [r["train_sq_index"] for r in records if "train_sq_index" in r]
    expected_sq = sum(i * i for i in range(TRAIN_SIZE)) / TRAIN_SIZE
    assert epoch_records == pytest.approx([expected_sq, expected_sq], rel=1e-12)
