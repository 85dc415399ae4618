"""Tests of the run directory: RunWriter writes it, Run/list_runs/MetricsTail/compare read it."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lightning_lab.errors import ConfigurationError, RunDirectoryError
from lightning_lab.runs import (
    RUN_STATUSES,
    MetricsTail,
    Run,
    RunWriter,
    find_last_checkpoint,
    list_runs,
    load_run,
    new_run_id,
    read_metrics,
    resolve_root,
)

INFO = {"hparams": {"lr": 0.1, "hidden": 32}, "config": {"max_epochs": 2}, "backend": "inprocess"}


def _make_run(root: Path, name: str = "mlp", steps: int = 5, status: str = "completed", **kw) -> Run:
    writer = RunWriter.create(root, name, INFO, **kw)
    for step in range(steps):
        writer.log({"step": step, "epoch": step // 3, "time": 0.1 * step, "loss": 1.0 / (step + 1)})
    writer.log({"step": steps - 1, "epoch": (steps - 1) // 3, "val_loss": 0.5})
    writer.close(status, final={"loss": 1.0 / steps, "val_loss": 0.5})
    return Run(writer.path)


def _metrics_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lightning_lab-metrics")]


# -- records --------------------------------------------------------------------------------------


def test_resolve_root_prefers_argument_then_env_then_default(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_LAB_ROOT", str(tmp_path / "from_env"))
    assert resolve_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_root() == tmp_path / "from_env"
    monkeypatch.delenv("LIGHTNING_LAB_ROOT")
    monkeypatch.chdir(tmp_path)
    assert resolve_root() == tmp_path.resolve() / "lab_runs"
    assert resolve_root().is_absolute()


def test_new_run_id_is_sortable_and_unique():
    ids = [new_run_id() for _ in range(200)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", i) for i in ids)
    assert time.strftime("%Y%m%d", time.gmtime()) in ids[-1][:8]  # UTC date first, so ids sort by time


def test_read_metrics_skips_blank_malformed_and_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step":0,"loss":1.0}\n\n{not json\n{"step":1,"loss":NaN}\n{"step":2,"lo')
    records = read_metrics(path)
    assert [r["step"] for r in records] == [0, 1]
    assert math.isnan(records[1]["loss"])
    with path.open("ab") as f:
        f.write(b'ss":0.25}\n')
    assert read_metrics(path)[-1] == {"step": 2, "loss": 0.25}
    assert read_metrics(tmp_path / "missing.jsonl") == []


def test_metrics_tail_returns_only_new_records_and_holds_back_a_partial_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read_new() == []  # the file does not exist yet
    path.write_bytes(b'{"step":0}\n{"step":1}\n')
    assert tail.read_new() == [{"step": 0}, {"step": 1}]
    assert tail.read_new() == []
    with path.open("ab") as f:
        f.write(b'{"step":2}\n{"st')
    assert tail.read_new() == [{"step": 2}]
    assert tail.read_new() == []  # "{"st" waits for its newline
    with path.open("ab") as f:
        f.write(b'ep":3}\n')
    assert tail.read_new() == [{"step": 3}]
    assert not tail.restarted


def test_metrics_tail_starts_over_when_the_file_is_rewritten(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step":0}\n{"step":1}\n{"step":2}\n')
    tail = MetricsTail(path)
    assert len(tail.read_new()) == 3
    path.write_bytes(b'{"step":0}\n')
    assert tail.read_new() == [{"step": 0}]
    assert tail.restarted


# -- writer ---------------------------------------------------------------------------------------


def test_create_log_close_writes_run_json_and_metrics(tmp_path):
    writer = RunWriter.create(tmp_path, "mlp", INFO)
    assert writer.path.parent == tmp_path / "mlp"
    for sub in ("checkpoints", "source", "logs"):
        assert (writer.path / sub).is_dir()
    info = json.loads((writer.path / "run.json").read_text())
    assert info["status"] == "running" and info["end_time"] is None
    assert info["id"] == writer.id == writer.path.name and info["name"] == "mlp"
    assert info["hparams"] == INFO["hparams"] and info["backend"] == "inprocess"
    assert (writer.path / "metrics.jsonl").read_text() == ""

    for step in range(3):
        writer.log({"step": step, "epoch": 0, "loss": 0.5 - 0.1 * step})
    assert writer.records_logged == 3
    writer.close("completed", final={"loss": 0.3})

    info = json.loads((writer.path / "run.json").read_text())
    assert info["status"] == "completed"
    assert info["final"] == {"loss": 0.3}
    assert info["start_time"] <= info["end_time"]
    assert [r["step"] for r in read_metrics(writer.path / "metrics.jsonl")] == [0, 1, 2]
    assert writer.info["status"] == "completed"
    assert len(_metrics_threads()) <= 1  # one flusher thread serves every writer of the process
    assert list(writer.path.rglob("*.tmp")) == []  # run.json was replaced atomically


def test_background_flusher_writes_records_without_flush(tmp_path):
    writer = RunWriter.create(tmp_path, "live", {}, flush_interval=0.2)
    writer.log({"step": 0, "loss": 1.0})
    metrics = writer.path / "metrics.jsonl"
    deadline = time.monotonic() + 2.0
    while not read_metrics(metrics) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read_metrics(metrics) == [{"step": 0, "loss": 1.0}]
    writer.close("stopped")


def test_one_flusher_thread_serves_writers_each_on_its_own_interval(tmp_path):
    slow = RunWriter.create(tmp_path, "slow", {}, flush_interval=60)
    fast = [RunWriter.create(tmp_path, f"fast{i}", {}, flush_interval=0.1) for i in range(3)]
    slow.log({"step": 0, "loss": 1.0})
    for writer in fast:
        writer.log({"step": 0, "loss": 2.0})
    deadline = time.monotonic() + 3.0
    while not all(read_metrics(w.path / "metrics.jsonl") for w in fast) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [read_metrics(w.path / "metrics.jsonl") for w in fast] == [[{"step": 0, "loss": 2.0}]] * 3
    assert read_metrics(slow.path / "metrics.jsonl") == []  # not due for a minute
    assert len(_metrics_threads()) == 1
    for writer in (slow, *fast):
        writer.close("completed")
    assert read_metrics(slow.path / "metrics.jsonl") == [{"step": 0, "loss": 1.0}]  # written by close


def test_flush_writes_pending_records_now(tmp_path):
    writer = RunWriter.create(tmp_path, "mlp", {}, flush_interval=60)
    writer.log({"step": 0, "loss": 1.0})
    writer.flush()
    assert read_metrics(writer.path / "metrics.jsonl") == [{"step": 0, "loss": 1.0}]
    writer.close("completed")


def test_records_stay_in_log_order_while_flush_races_the_flusher(tmp_path):
    writer = RunWriter.create(tmp_path, "mlp", {}, flush_interval=0.001)
    for step in range(5000):
        writer.log({"step": step})
        if step % 500 == 0:
            writer.flush()
    writer.close("completed")
    assert [r["step"] for r in read_metrics(writer.path / "metrics.jsonl")] == list(range(5000))


def test_writer_argument_errors_name_the_value(tmp_path):
    with pytest.raises(ConfigurationError, match=r"flush_interval must be a positive number .* got 0"):
        RunWriter.create(tmp_path, "mlp", {}, flush_interval=0)
    assert not (tmp_path / "mlp").exists()  # nothing made before the check
    run = _make_run(tmp_path)
    with pytest.raises(ConfigurationError, match="keep_records must be >= 0, got -1"):
        RunWriter.open(run.path, keep_records=-1)
    writer = RunWriter.open(run.path)
    with pytest.raises(RunDirectoryError, match=r"Cannot copy .*missing\.py"):
        writer.add_source(tmp_path / "missing.py")
    writer.close("completed")


def test_tensor_values_are_written_as_floats_and_nan_round_trips(tmp_path):
    torch = pytest.importorskip("torch")
    writer = RunWriter.create(tmp_path, "mlp", {})
    writer.log({"step": torch.tensor(3), "epoch": 0, "loss": torch.tensor(0.25), "acc": torch.tensor(1)})
    writer.log({"step": 4, "loss": float("nan"), "tag": "x", "grad": None})
    writer.close("completed", final={"loss": torch.tensor(0.25)})
    first, second = read_metrics(writer.path / "metrics.jsonl")
    assert first == {"step": 3, "epoch": 0, "loss": 0.25, "acc": 1.0}
    assert type(first["step"]) is int and type(first["acc"]) is float
    assert math.isnan(second["loss"]) and second["tag"] == "x" and second["grad"] is None
    assert Run(writer.path).final == {"loss": 0.25}


def test_bulk_encoding_reads_back_the_same_values_as_json_in_log_order(tmp_path):
    """A run of same-keyed numeric records takes the bulk path; anything else falls back to json."""
    from lightning_lab.runs.encoding import encode_records

    now = time.time()
    records = [{"step": i, "epoch": 0, "time": now + i / 7, "loss": 1 / (i + 3), "big": 10**15 + i} for i in range(50)]
    records += [
        {"step": 50, "epoch": 0, "time": now, "loss": float("inf")},  # non-finite: json's token
        {"step": 51, "epoch": 0, "time": now, "flag": True},  # bool stays a JSON boolean
        {"step": 52, "epoch": 0, "time": now, "advice": "raise num_workers", "memory": None},
        {"epoch": 0, "step": 53, "time": now, "loss": 0.5},  # same keys, another order: kept as logged
        {"50%": 1.5, "huge": 10**400},  # a '%' in a key; an int no float can hold
    ]
    lines = encode_records(records).splitlines()
    assert len(lines) == len(records)
    for line, record in zip(lines, records, strict=True):
        decoded = json.loads(line)
        assert list(decoded) == [str(k) for k in record]
        for key, value in record.items():
            if key == "time":
                assert decoded[key] == pytest.approx(value, abs=5e-4)  # milliseconds are kept
            else:
                assert decoded[key] == value, (key, line)
    assert lines[50].endswith('"loss":Infinity}') and '"flag":true' in lines[51]


def test_state_files_are_renamed_at_once_and_synced_on_a_background_thread(tmp_path):
    from lightning_lab._io import atomic_write_json, sync_later, wait_for_syncs

    target = tmp_path / "run.json"
    atomic_write_json(target, {"status": "running"})
    assert json.loads(target.read_text()) == {"status": "running"}  # in place before any fsync
    sync_later(tmp_path / "removed-meanwhile.json")  # a file gone before its turn is skipped
    atomic_write_json(target, {"status": "completed"})
    wait_for_syncs()
    assert json.loads(target.read_text()) == {"status": "completed"}
    assert not list(tmp_path.glob(".run.json.*"))  # no temporary file left behind


def test_close_rejects_an_unknown_status_and_is_idempotent(tmp_path):
    writer = RunWriter.create(tmp_path, "mlp", {})
    with pytest.raises(ConfigurationError, match=r"status 'done' is not one of running, completed"):
        writer.close("done")
    writer.close("failed", error={"type": "ValueError", "message": "boom", "traceback": "..."})
    end_time = writer.info["end_time"]
    writer.close("failed")
    run = Run(writer.path)
    assert run.status == "failed" and run.error["message"] == "boom"
    assert run.end_time == end_time
    with pytest.raises(RunDirectoryError, match="is closed"):
        writer.log({"step": 1})


def test_create_rejects_bad_names_and_existing_ids(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot be a folder name"):
        RunWriter.create(tmp_path, "a/b", {})
    _make_run(tmp_path, run_id="fixed")
    with pytest.raises(RunDirectoryError, match="already exists"):
        RunWriter.create(tmp_path, "mlp", {}, run_id="fixed")


def test_update_and_add_source(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    writer = RunWriter.create(tmp_path / "runs", "mlp", {})
    writer.update(world_size=2, host="node1")
    writer.add_source(script)
    writer.add_source(script, "cells/cell_1.py")
    with pytest.raises(ConfigurationError, match="relative path inside source"):
        writer.add_source(script, "../escape.py")
    writer.close("completed")
    assert Run(writer.path).info["world_size"] == 2
    assert (writer.path / "source" / "train.py").read_text() == "print('hi')\n"
    assert (writer.path / "source" / "cells" / "cell_1.py").exists()


def test_open_resumes_and_keeps_discarded_records(tmp_path):
    run = _make_run(tmp_path, steps=5)  # 6 records
    writer = RunWriter.open(run.path, keep_records=4)
    assert writer.records_logged == 4
    assert writer.info["status"] == "running" and writer.info["end_time"] is None
    assert len(writer.info["resumes"]) == 1 and "final" not in writer.info
    kept = read_metrics(run.path / "metrics.jsonl")
    discarded = read_metrics(run.path / "logs" / "discarded-metrics.jsonl")
    assert [r["step"] for r in kept] == [0, 1, 2, 3]
    assert [r["step"] for r in discarded] == [4, 4]
    writer.log({"step": 4, "loss": 0.1})
    assert writer.records_logged == 5
    writer.close("completed")
    run.refresh()
    assert run.status == "completed" and [r["step"] for r in run.metrics] == [0, 1, 2, 3, 4]


def test_open_moves_a_torn_last_line_out_of_the_way(tmp_path):
    run = _make_run(tmp_path, steps=2)  # 3 records
    with (run.path / "metrics.jsonl").open("ab") as f:
        f.write(b'{"step":9,"lo')  # a crash mid-write
    writer = RunWriter.open(run.path)
    assert writer.records_logged == 3
    writer.log({"step": 2, "loss": 0.2})
    writer.close("completed")
    assert [r["step"] for r in Run(run.path).metrics] == [0, 1, 1, 2]
    assert (run.path / "logs" / "discarded-metrics.jsonl").read_bytes() == b'{"step":9,"lo\n'


def test_open_without_run_json_raises(tmp_path):
    with pytest.raises(RunDirectoryError, match=r"Cannot resume run directory .*run\.json is missing"):
        RunWriter.open(tmp_path)


# -- reader ---------------------------------------------------------------------------------------


def test_run_reads_metrics_final_history_and_checkpoints(tmp_path):
    run = _make_run(tmp_path, steps=5)
    assert run.status == "completed" and run.hparams == INFO["hparams"] and run.config == INFO["config"]
    assert len(run.metrics) == 6 and run.metrics is run.metrics  # cached while the file is unchanged
    assert run.final == {"loss": 0.2, "val_loss": 0.5}
    assert run.history("loss") == ([0, 1, 2, 3, 4], [1.0, 0.5, 1 / 3, 0.25, 0.2])
    assert run.history("val_loss") == ([4], [0.5])
    assert run.duration is not None and run.duration >= 0
    assert run.error is None
    assert run.checkpoints == [] and run.last_checkpoint is None
    for name in ("best-2.ckpt", "last.ckpt", "best-1.ckpt"):
        (run.path / "checkpoints" / name).write_bytes(b"x")
    assert [p.name for p in run.checkpoints] == ["last.ckpt", "best-1.ckpt", "best-2.ckpt"]
    assert run.last_checkpoint == run.path / "checkpoints" / "last.ckpt"
    assert repr(run) == f"Run(name='mlp', id='{run.id}', status='completed')"
    assert load_run(run.path / "run.json").id == run.id


def test_final_of_a_running_run_comes_from_the_metrics(tmp_path):
    writer = RunWriter.create(tmp_path, "mlp", {})
    writer.log({"step": 0, "epoch": 0, "time": 1.0, "loss": 0.9})
    writer.log({"step": 1, "epoch": 0, "time": 2.0, "loss": 0.7, "lr": None})
    writer.flush()
    run = Run(writer.path)
    assert run.status == "running" and run.end_time is None
    assert run.final == {"loss": 0.7}
    writer.log({"step": 2, "loss": 0.5})
    writer.flush()
    assert run.final == {"loss": 0.5}  # metrics re-read once the file changed
    writer.close("completed")


def test_load_run_on_a_non_run_folder_raises(tmp_path):
    with pytest.raises(RunDirectoryError, match="is not a lightning_lab run directory"):
        load_run(tmp_path)
    (tmp_path / "run.json").write_text("{torn")
    with pytest.raises(
        RunDirectoryError, match=r"not a lightning_lab run directory: cannot read .*run\.json"
    ):
        load_run(tmp_path)


def test_list_runs_sorts_by_start_time_and_filters_by_name(tmp_path, monkeypatch):
    first = _make_run(tmp_path, "mlp")
    second = _make_run(tmp_path, "cnn")
    third = _make_run(tmp_path, "mlp")
    (tmp_path / "mlp" / "junk").mkdir()  # not a run: skipped
    (tmp_path / "mlp" / "broken").mkdir()
    (tmp_path / "mlp" / "broken" / "run.json").write_text("{")
    assert [r.path for r in list_runs(tmp_path)] == [first.path, second.path, third.path]
    assert [r.path for r in list_runs(tmp_path, name="mlp")] == [first.path, third.path]
    assert list_runs(tmp_path, name="missing") == []
    monkeypatch.setenv("LIGHTNING_LAB_ROOT", str(tmp_path))
    assert len(list_runs()) == 3


def test_find_last_checkpoint_picks_the_newest(tmp_path):
    old, new = _make_run(tmp_path), _make_run(tmp_path)
    assert find_last_checkpoint(tmp_path, "mlp") is None
    for run, mtime in ((old, 1_000_000), (new, 2_000_000)):
        ckpt = run.path / "checkpoints" / "last.ckpt"
        ckpt.write_bytes(b"x")
        os.utime(ckpt, (mtime, mtime))
    assert find_last_checkpoint(tmp_path, "mlp") == new.path / "checkpoints" / "last.ckpt"
    assert find_last_checkpoint(tmp_path, "cnn") is None


# -- compare --------------------------------------------------------------------------------------


def test_compare_draws_one_line_per_run(tmp_path):
    from matplotlib.figure import Figure

    from lightning_lab.runs import compare

    a, b = _make_run(tmp_path), _make_run(tmp_path, steps=8)
    fig = compare([a, str(b.path)], "loss")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == [f"mlp/{a.id}", f"mlp/{b.id}"]
    assert list(ax.get_lines()[1].get_xdata()) == list(range(8))
    fig.savefig(tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_compare_unknown_metric_lists_the_logged_ones(tmp_path):
    from lightning_lab.runs import compare

    run = _make_run(tmp_path)
    with pytest.raises(ConfigurationError, match=r"no run has metric 'acc'.*logged: loss, val_loss"):
        compare([run], "acc")


# -- import cost ----------------------------------------------------------------------------------


def test_importing_runs_pulls_in_neither_torch_nor_matplotlib_nor_the_engine():
    # Load lightning_lab.runs under a bare parent package, so whatever lightning_lab/__init__.py
    # imports (torch, the engine) does not hide what lightning_lab.runs itself imports.
    code = """
import importlib.util, sys, types
spec = importlib.util.find_spec("lightning_lab")
parent = types.ModuleType("lightning_lab")
parent.__path__ = list(spec.submodule_search_locations)
sys.modules["lightning_lab"] = parent
import lightning_lab.runs
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "matplotlib")
             or m.startswith("lightning_lab.engine")))
"""
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_run_statuses():
    assert RUN_STATUSES == ("running", "completed", "failed", "stopped")
