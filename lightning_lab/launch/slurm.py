"""The Slurm backend: submit a run as an sbatch job, follow it to its end, stream its metrics.

``run_slurm(spec)`` is what ``lightning-lab run SCRIPT --backend slurm`` and ``%%train --backend
slurm`` call. The job is followed with ``squeue``/``scontrol`` and marker files in the run
directory (``sacct`` needs an accounting database that many small clusters lack); its metrics are
read from the run directory, which the cluster's nodes share with the submitting machine. A
requeue (preemption, ``--signal=USR1@90``) is not the end: the job starts again, the engine
resumes from ``last.ckpt``, and the follower keeps streaming the same run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_lab.errors import LabError
from lightning_lab.launch.sbatch import exit_marker, job_log, sbatch_script
from lightning_lab.launch.spec import LaunchSpec

# States after which the job never runs again (PREEMPTED: only when Slurm could not requeue it).
FINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL",
    "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT", "REVOKED",
})
POLL_S = 1.0  # how often squeue/scontrol are asked: quick on a test cluster, polite on a real one
MISSES_BEFORE_GONE = 10  # polls in a row without an answer about the job before it counts as gone

# Pending reasons that mean "not as the cluster stands": the user should hear it, not just wait.
_STUCK = {
    "PartitionNodeLimit": "asks for more nodes than the partition allows (see `sinfo`)",
    "PartitionTimeLimit": "asks for more time than the partition allows (see `sinfo`)",
    "PartitionDown": "is in a partition that is down",
    "ReqNodeNotAvail": "needs nodes that are down, drained or reserved",
    "BadConstraints": "asks for resources no node has",
}


class SlurmError(LabError, RuntimeError):
    """Slurm is missing, refused the job, or could not be asked about it."""


def _say(line: str) -> None:
    print(f"lightning-lab run: {line}", file=sys.stderr, flush=True)


def _slurm_command(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SlurmError(
            f"the slurm backend needs Slurm's `{name}` command, and it is not on PATH. Run from a "
            "login node of a Slurm cluster (or load its module), or start the local test cluster with "
            "`scripts/slurm_cluster.sh start` and export the SLURM_CONF it prints, or use --backend local."
        )
    return path


def _run(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [_slurm_command(name), *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise SlurmError(f"`{' '.join(command)}` did not answer within {timeout:.0f} s: is slurmctld up?") from err


def _one_line(text: str, command: str) -> str:
    """Slurm's error lines as one sentence: ``sbatch: error: X`` lines joined, the prefixes dropped."""
    lines = [re.sub(rf"^{command}: (error|fatal): ", "", line.strip()) for line in text.splitlines()]
    return "; ".join(line for line in lines if line) or f"{command} failed without a message"


def _wants_gpus(spec: LaunchSpec) -> bool:
    """``--accelerator cuda``, or ``auto`` where the submitting machine sees a GPU."""
    if spec.accelerator != "auto":
        return spec.accelerator == "cuda"
    import torch

    return torch.cuda.is_available()


# ------------------------------------------------------------------------------ job commands
def submit(spec: LaunchSpec, run_dir: Path) -> str:
    """Write ``<run>/slurm.sbatch`` for ``spec``, submit it, record the job in ``launch.json``.

    Args:
        spec: the launch (script, arguments, nodes, devices, partition, time, ...).
        run_dir: the prepared run directory (``lightning_lab.launch.rundir.prepare_run``).

    Returns:
        The Slurm job id.

    Raises:
        SlurmError: ``sbatch`` is missing or refused the job (its message, on one line).
    """
    from lightning_lab.launch.rundir import update_run, worker_env

    run_dir = Path(run_dir)
    script = run_dir / "slurm.sbatch"
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    script.write_text(sbatch_script(spec, run_dir, worker_env(spec, run_dir), gpus=_wants_gpus(spec)))
    result = _run("sbatch", "--parsable", str(script))
    if result.returncode != 0:
        raise SlurmError(f"sbatch refused the job: {_one_line(result.stderr, 'sbatch')} (script: {script})")
    job_id = result.stdout.strip().split(";")[0]  # "<id>[;<cluster>]"
    if not job_id.isdigit():
        raise SlurmError(f"sbatch answered {result.stdout.strip()!r} instead of a job id (script: {script})")
    update_run(run_dir, slurm={
        "job_id": job_id, "script": script.name, "log": f"logs/{job_log(run_dir, job_id).name}",
        "nodes": spec.nodes, "tasks_per_node": spec.devices, "partition": spec.partition, "time": spec.time,
    })
    return job_id


def job_info(job_id: str) -> dict[str, str]:
    """``scontrol show job``'s fields (JobState, Reason, Restarts, ExitCode, ...); {} for an unknown job."""
    result = _run("scontrol", "show", "job", "--oneliner", str(job_id))
    if result.returncode != 0:
        return {}
    return dict(re.findall(r"(\w+)=(\S*)", result.stdout))


def job_state(job_id: str) -> str | None:
    """The job's state (``PENDING``, ``RUNNING``, ``COMPLETED``, ...), or None once Slurm forgot it."""
    result = _run("squeue", "--noheader", "--states=all", "--jobs", str(job_id), "--format=%T")
    state = result.stdout.strip().split("\n")[0].strip() if result.returncode == 0 else ""
    return state or job_info(job_id).get("JobState") or None


def cancel(job_id: str) -> None:
    """Cancel the job (all of it: a cancelled job is not requeued)."""
    result = _run("scancel", str(job_id))
    if result.returncode != 0:
        raise SlurmError(f"scancel {job_id} failed: {_one_line(result.stderr, 'scancel')}")


# ------------------------------------------------------------------------------ following
class JobWatch:
    """Asks Slurm about a job at most every ``POLL_S`` and reports each change of state."""

    def __init__(self, job_id: str, say: Callable[[str], None] = _say) -> None:
        self.job_id = job_id
        self.say = say
        self.info: dict[str, str] = {}
        self.state: str | None = "PENDING"
        self._shown: tuple[str | None, str] = (None, "")
        self._last_poll = float("-inf")
        self._misses = 0

    @property
    def restarts(self) -> int:
        """How often the job was requeued so far."""
        return int(self.info.get("Restarts", "0") or 0)

    def poll(self) -> str | None:
        """Ask Slurm now; remember and report the state; None when Slurm no longer knows the job."""
        self._last_poll = time.monotonic()
        try:
            info = job_info(self.job_id)
            state = info.get("JobState") or job_state(self.job_id)
        except SlurmError:
            info, state = {}, None  # slurmctld did not answer in time
        if state is None:
            # A busy slurmctld answers nothing now and then: only a job unknown for a while is gone.
            self._misses += 1
            if self._misses < MISSES_BEFORE_GONE:
                return self.state
        self._misses = 0
        self.info = info or self.info
        self.state = state
        reason = info.get("Reason", "None") if self.state == "PENDING" else ""
        if (self.state, reason) != self._shown:
            self._shown = (self.state, reason)
            self.say(self._describe(reason))
        return self.state

    def _describe(self, reason: str) -> str:
        line = f"slurm job {self.job_id} {self.state or 'no longer known to Slurm'}"
        if reason == "BeginTime" and self.restarts:
            line += f" (requeued; starts again at {self.info.get('StartTime', '?')})"
        elif reason not in ("", "None"):
            line += f" ({reason})"
            if reason in _STUCK:
                line += f": the job {_STUCK[reason]}, so it waits until that changes; Ctrl-C cancels it"
        if self.state == "RUNNING":
            line += f" on {self.info.get('NodeList', '?')}" + (f", start {self.restarts + 1}" if self.restarts else "")
        return line

    def alive(self) -> bool:
        """True while the job may still run (a requeued job is alive); polls at a bounded rate."""
        if time.monotonic() - self._last_poll >= POLL_S:
            self.poll()
        return self.state is not None and self.state not in FINAL_STATES


def _marker_exit(run_dir: Path, job_id: str) -> int | None:
    """srun's exit code as the batch shell recorded it (None: srun never returned normally)."""
    marker = exit_marker(run_dir, job_id)
    match = re.search(r"exit=(\d+)", marker.read_text()) if marker.is_file() else None
    return int(match.group(1)) if match else None


def _end_state(watch: JobWatch, run_dir: Path) -> str:
    """The job's final state; when Slurm already forgot it, the exit marker decides."""
    if watch.state is not None:
        return watch.state
    code = _marker_exit(run_dir, watch.job_id)
    return "UNKNOWN" if code is None else ("COMPLETED" if code == 0 else "FAILED")


def _exit_code(run_dir: Path, watch: JobWatch, state: str) -> int:
    """0 for a completed job; else the first failed task's code, srun's, Slurm's ``ExitCode``, or 1."""
    if state == "COMPLETED":
        return 0
    log = job_log(run_dir, watch.job_id)
    # srun's own code is the worst of all tasks (143 for the ones it terminated after the first failure)
    first = re.search(r"task[s \d,-]*: Exited with exit code (\d+)", log.read_text(errors="replace")) \
        if log.is_file() else None
    code = int(first.group(1)) if first else _marker_exit(run_dir, watch.job_id)
    if code:
        return code
    status, _, signal = watch.info.get("ExitCode", "0:0").partition(":")
    if status.isdigit() and int(status):
        return int(status)
    return 128 + int(signal) if signal.isdigit() and int(signal) else 1


def _failure(run_dir: Path, job_id: str, state: str) -> dict[str, Any]:
    """The traceback of the rank that failed first (as srun reports it, else the lowest rank that
    printed one), else a summary pointing at the job's log."""
    from lightning_lab.launch.rundir import failure_from_log

    def rank(path: Path) -> int:
        found = re.search(r"\.rank(\d+)\.out$", path.name)
        return int(found.group(1)) if found else 0

    batch_log = job_log(run_dir, job_id)
    # srun names the first task that failed ("task 1: Exited with exit code 1"): its traceback is
    # the cause; the others' are usually the consequence (a lost peer).
    text = batch_log.read_text(errors="replace") if batch_log.is_file() else ""
    first = re.search(r"tasks? (\d+)[-\d,]*: Exited with exit code", text)
    ranks = sorted(run_dir.glob(f"logs/slurm-{job_id}.rank*.out"), key=rank)
    if first:
        ranks.sort(key=lambda path: rank(path) != int(first.group(1)))
    for log in [*ranks, batch_log]:
        error = failure_from_log(log)
        if error:
            where = {"rank": rank(log)} if log != batch_log else {}
            return {**error, **where, "log": f"logs/{log.name}", "slurm_state": state}
    tail = text.strip().splitlines()[-3:]
    return {"type": "SlurmJobFailed", "log": f"logs/{batch_log.name}", "slurm_state": state,
            "message": f"Slurm job {job_id} ended {state}" + (f": {' | '.join(tail)}" if tail else "")}


def _settle(run_dir: Path, job_id: str, state: str) -> None:
    """Record how the run ended where the engine could not (it was killed, or never started)."""
    from lightning_lab.launch.rundir import finish_run

    if state == "COMPLETED":
        finish_run(run_dir, "completed")
    elif state == "CANCELLED":
        finish_run(run_dir, "stopped")
    else:
        # the engine may have recorded a failure already; a rank's own traceback is the better one
        finish_run(run_dir, "failed", error=_failure(run_dir, job_id, state), force_error=True)


def run_slurm(spec: LaunchSpec, run_dir: Path | None = None,
              on_records: Callable[[list[dict[str, Any]]], None] | None = None,
              say: Callable[[str], None] = _say) -> int:
    """Run ``spec`` as a Slurm job, follow it to its end, and stream its metrics.

    Prints the job id and the run directory, each change of the job's state (pending, running,
    requeued, ...), progress lines from ``metrics.jsonl``, and how the run ended. A requeued job
    (preemption) is followed through its next start. Ctrl-C cancels the job.

    Args:
        spec: the launch; ``spec.backend`` is ``"slurm"``.
        run_dir: a run directory prepared by the caller (``%%train`` does); else a new one.
        on_records: called with each batch of new metric records (the notebook's live widget);
            without it, compact progress lines are printed.
        say: where the backend's own lines go (default: stderr, prefixed ``lightning-lab run:``).

    Returns:
        0 when the job completed (its run completed, or stopped on request); the exit code of the task that failed first
        (else srun's, else 1) when it did not; 130 when interrupted.

    Raises:
        SlurmError: ``sbatch`` is missing or refused the job (the run is then marked failed).

    Example:
        >>> spec = LaunchSpec(Path("train.py"), ["--lr", "0.1"], backend="slurm", devices=2)  # doctest: +SKIP
        >>> run_slurm(spec)  # doctest: +SKIP
    """
    from lightning_lab.launch.follow import ProgressPrinter, end_summary, follow, run_status
    from lightning_lab.launch.rundir import finish_run, prepare_run

    _slurm_command("sbatch")  # before a run directory exists: a missing Slurm leaves nothing behind
    run_dir = prepare_run(spec, run_dir)
    try:
        job_id = submit(spec, run_dir)
    except SlurmError as err:
        finish_run(run_dir, "failed", error={"type": "SlurmError", "message": str(err)})
        raise
    say(f"submitted Slurm job {job_id}: {spec.nodes} node(s) × {spec.devices} task(s) of {spec.script.name}; "
        f"run directory {run_dir}")
    watch = JobWatch(job_id, say)
    try:
        follow(run_dir, watch.alive, on_records=on_records, printer=None if on_records else ProgressPrinter())
    except KeyboardInterrupt:
        cancel(job_id)
        say(f"interrupted: cancelled Slurm job {job_id}; what it saved stays in {run_dir}")
        deadline = time.monotonic() + 30  # let the job's processes end, so its files settle
        while watch.poll() not in FINAL_STATES | {None} and time.monotonic() < deadline:
            time.sleep(0.5)
        finish_run(run_dir, "stopped")
        return 130
    state = _end_state(watch, run_dir)
    _settle(run_dir, job_id, state)
    code = _exit_code(run_dir, watch, state)
    if code == 0 and run_status(run_dir) == "failed":
        code = 1  # the job ended well but the engine recorded a failure (a stop request is no failure)
    requeues = f" after {watch.restarts} requeue(s)" if watch.restarts else ""
    say(f"Slurm job {job_id} ended {state}{requeues} (exit code {code}); {end_summary(run_dir)}")
    if code:
        say(f"job output: {job_log(run_dir, job_id)}; each rank's: {run_dir / 'logs'}/slurm-{job_id}.rank<N>.out")
    return code
