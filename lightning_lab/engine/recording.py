"""The trainer's link to its run directory: which run to write, what goes in run.json, records."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_lab.engine.checkpoint import plain, versions
from lightning_lab.engine.relaunch import RUN_DIR_ENV  # set by launchers that prepared the run directory
from lightning_lab.errors import CheckpointError
from lightning_lab.runs import Run, RunWriter, find_last_checkpoint, resolve_root

if TYPE_CHECKING:
    from lightning_lab.engine.module import LabModule
    from lightning_lab.engine.trainer import Trainer


class RunRecorder:
    """Chooses the run directory (new, resumed, or prepared by a launcher) and writes to it.

    Only global rank 0 holds a :class:`RunWriter`; the other ranks learn the path by broadcast
    and record nothing.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.writer: RunWriter | None = None
        self.path: Path | None = None
        self.checkpoint_path: Path | None = None
        self._fit_status: str | None = None
        # What ran, when the caller knows better than sys.argv (the %%train magic sets these):
        # a description for run.json and files to copy into source/ as {name: text}.
        self.source: dict[str, Any] | None = None
        self.source_files: dict[str, str] = {}

    @property
    def name(self) -> str | None:
        return self.path.parent.name if self.path is not None else None

    @property
    def run_id(self) -> str | None:
        return self.path.name if self.path is not None else None

    @property
    def run(self) -> Run | None:
        return Run(self.path) if self.path is not None else None

    @property
    def stop_file(self) -> Path | None:
        return self.path / "STOP" if self.path is not None else None

    def _name_for(self, module: LabModule) -> str:
        return self.trainer.name or os.environ.get("LIGHTNING_LAB_NAME") or type(module).__name__

    def find_checkpoint(self, ckpt_path: str | Path, module: LabModule) -> Path:
        """Resolve ``ckpt_path`` (``"last"`` or a path) to an existing file, the same on every rank."""
        engine = self.trainer.engine
        if ckpt_path == "last":
            name = self._name_for(module)
            root = resolve_root(self.trainer.root_dir)
            found = engine.broadcast(find_last_checkpoint(root, name) if engine.is_global_zero else None)
            if found is None:
                raise CheckpointError(
                    f"ckpt_path='last': no last.ckpt among the runs named {name!r} under {root}. Train once "
                    "first (every fit saves last.ckpt), pass name= to pick another run name, or give a path."
                )
            path = Path(found)
        else:
            path = Path(ckpt_path).expanduser()
            if not path.is_file():
                raise CheckpointError(f"ckpt_path={str(ckpt_path)!r} does not exist.")
        self.checkpoint_path = path.resolve()
        return self.checkpoint_path

    def open(self, stage: str, module: LabModule, checkpoint: dict[str, Any] | None,
             ckpt_file: Path | None) -> None:
        """Start writing: continue the checkpoint's run, a launcher's run, or a new one."""
        engine = self.trainer.engine
        path = None
        if engine.is_global_zero:
            self.writer = self._writer_for(stage, module, checkpoint, ckpt_file)
            path = self.writer.path
            stop = path / "STOP"
            if stop.exists():  # a stop already honoured must not stop the next session at once
                stop.unlink()
            for logger in self.trainer.loggers:
                logger.setup(path, self.writer.info)
        self.path = Path(engine.broadcast(str(path) if path is not None else None))

    def _writer_for(self, stage: str, module: LabModule, checkpoint: dict[str, Any] | None,
                    ckpt_file: Path | None) -> RunWriter:
        info = self._info(stage, module)
        run_dir = None
        keep = None
        if stage == "fit" and checkpoint is not None and ckpt_file is not None:
            candidate = ckpt_file.parent.parent
            if ckpt_file.parent.name == "checkpoints" and (candidate / "run.json").is_file():
                run_dir, keep = candidate, checkpoint.get("run", {}).get("records")
        if run_dir is None and os.environ.get(RUN_DIR_ENV):
            run_dir = Path(os.environ[RUN_DIR_ENV]).resolve()
            if not (run_dir / "run.json").is_file():
                writer = RunWriter.create(run_dir.parent.parent, run_dir.parent.name, info, run_id=run_dir.name)
                self._add_source(writer, info)
                return writer
        if run_dir is None and stage != "fit" and self.path is not None:
            run_dir = self.path  # validate/test after fit: same run
        if run_dir is not None:
            writer = RunWriter.open(run_dir, keep_records=keep)
            writer.update(**({k: v for k, v in info.items() if k != "source"} if stage == "fit" else {}))
            return writer
        writer = RunWriter.create(resolve_root(self.trainer.root_dir), self._name_for(module), info)
        self._add_source(writer, info)
        return writer

    def _info(self, stage: str, module: LabModule) -> dict[str, Any]:
        engine = self.trainer.engine
        backend = os.environ.get("LIGHTNING_LAB_BACKEND") or (
            "inprocess" if engine.environment.kind == "single" else engine.environment.kind)
        return {
            "model": type(module).__name__,
            "stage": stage,
            "hparams": plain(dict(module.hparams)),
            "config": plain(self.trainer.config),
            "backend": backend,
            "world_size": engine.world_size,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            **({"slurm_job_id": os.environ["SLURM_JOB_ID"]} if backend == "slurm" and "SLURM_JOB_ID" in os.environ else {}),
            "versions": versions(),
            "source": self.source or _source_info(),
        }

    def _add_source(self, writer: RunWriter, info: dict[str, Any]) -> None:
        script = info["source"].get("script")
        try:
            if script:
                writer.add_source(Path(script))
            for name, text in self.source_files.items():
                (writer.path / "source" / name).write_text(text)
        except OSError:
            pass  # the record of what ran is a convenience; never fail a run over it

    def log(self, values: dict[str, Any]) -> None:
        """Queue one record (rank 0; a no-op elsewhere)."""
        writer = self.writer
        if writer is not None:
            loop = self.trainer._loop
            record = {"step": loop.global_step, "epoch": loop.epoch, "time": time.time(), **values}
            writer.log(record)
            loggers = self.trainer.loggers
            if loggers:
                for logger in loggers:
                    logger.log_metrics(record)

    def log_system(self, values: dict[str, Any]) -> None:
        """Queue one ``sys/...`` record (rank 0): the run directory only, not the loggers."""
        if self.writer is not None:
            trainer = self.trainer
            record = {"step": trainer.global_step, "epoch": trainer.current_epoch, "time": time.time()}
            record.update(values)
            self.writer.log(record)

    def flush(self) -> None:
        """Write queued records now (before a checkpoint records how many there are)."""
        if self.writer is not None:
            self.writer.flush()

    def add_preemption(self) -> None:
        """Record in run.json that a preemption stopped the run at this step (rank 0)."""
        if self.writer is not None:
            previous = list(self.writer.info.get("preemptions", []))
            self.writer.update(preemptions=[*previous, {"step": self.trainer.global_step, "time": time.time(),
                                                        "slurm_job_id": os.environ.get("SLURM_JOB_ID")}])

    def position(self) -> dict[str, Any]:
        """Which run, and how many records it holds: a resume keeps exactly those."""
        return {"id": self.run_id, "records": self.writer.records_logged if self.writer is not None else 0}

    def close(self, status: str, final: dict[str, float], error: dict[str, Any] | None) -> None:
        """Record how the stage ended. Evaluating after fit keeps fit's status unless it fails."""
        stage = self.trainer.state
        if stage == "fit":
            self._fit_status = status
        elif status == "completed" and self._fit_status is not None:
            status = self._fit_status
        for logger in self.trainer.loggers:
            logger.finalize(status)
        if self.writer is not None:
            insight = self.trainer.insight if stage == "fit" else None  # where the fit's time went
            more = {"insight": insight.to_dict()} if insight is not None else {}
            self.writer.close(status, final=final, error=error, **more)
            self.writer = None


def _source_info() -> dict[str, Any]:
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if script and script.endswith(".py") and Path(script).is_file():
        return {"kind": "script", "script": str(Path(script).resolve()), "argv": list(sys.argv)}
    notebook = os.environ.get("JPY_SESSION_NAME")
    if notebook:
        return {"kind": "notebook", "notebook": notebook}
    return {"kind": "interactive", "argv": list(sys.argv)}

