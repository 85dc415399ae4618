"""Engine: device, processes, precision and collectives — the layer the Trainer stands on.

Usable by hand for a custom loop (Fabric-style)::

    engine = Engine(precision="bf16-mixed")
    engine.launch()
    model, optimizer = engine.setup(model, optimizer)
    loader = engine.setup_dataloaders(loader)
    for x, y in loader:
        with engine.autocast():
            loss = F.cross_entropy(model(x), y)
        engine.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
"""

from __future__ import annotations

import atexit
import datetime
import io
import os
import re
import sys
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import nn

from lightning_lab._io import BackgroundWorker, atomic_write, sigint_deferred
from lightning_lab.engine.data import PreparedLoader, move_to_device, prepare_loader
from lightning_lab.engine.environment import ClusterEnvironment, detect_environment
from lightning_lab.engine.precision import make_precision
from lightning_lab.engine.relaunch import main_command
from lightning_lab.engine.seed import fresh_seed
from lightning_lab.errors import CheckpointError, ConfigurationError

ACCELERATORS = ("auto", "cpu", "cuda", "gpu")
STRATEGIES = ("auto", "single", "ddp")
_REDUCE_OPS = {"sum": "SUM", "mean": "SUM", "max": "MAX", "min": "MIN"}


class Engine:
    """Resolves where and how training runs, then offers the primitives a training loop needs.

    Args:
        accelerator: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``/``"gpu"``.
        devices: processes (CPU) or GPUs per node: ``"auto"``, an int, or a list of GPU indices.
            More than one needs one process each — start them with ``torchrun`` (or ``python
            script.py --devices N`` once the launcher is in place).
        num_nodes: nodes taking part.
        strategy: ``"auto"`` (DDP when several processes take part), ``"single"`` or ``"ddp"``.
        precision: ``"32-true"``, ``"bf16-mixed"`` or ``"16-mixed"``.

    Raises:
        ConfigurationError: an option has an unknown value, or asks for more devices than exist.
    """

    def __init__(self, accelerator: str = "auto", devices: int | str | list[int] = "auto",
                 num_nodes: int = 1, strategy: str = "auto", precision: str | int = "32-true") -> None:
        # Phase 1: where this process sits (torchrun / Slurm / alone).
        self.environment: ClusterEnvironment = detect_environment()
        # Phase 2: the device kind and how many processes per node.
        self.accelerator = _resolve_accelerator(accelerator)
        self.devices = _resolve_devices(devices, self.accelerator, self.environment)
        if not isinstance(num_nodes, int) or num_nodes < 1:
            raise ConfigurationError(f"num_nodes must be a positive integer, got {num_nodes!r}.")
        self.num_nodes = num_nodes
        expected = self.devices * num_nodes
        if self.environment.distributed and self.environment.world_size != expected and devices != "auto":
            raise ConfigurationError(
                f"devices={devices!r} × num_nodes={num_nodes} asks for {expected} processes, but the launcher "
                f"started {self.environment.world_size}. Make them agree, or pass devices='auto'."
            )
        # devices > 1 in a plain `python script.py`: this process will start the workers (launch()).
        self.workers_to_start = 0
        if not self.environment.distributed and expected > 1:
            if num_nodes > 1 or main_command() is None:
                raise ConfigurationError(
                    f"devices={devices!r} (× num_nodes={num_nodes}) needs {expected} processes, one per device. "
                    f"From a script, `python your_script.py` with devices={self.devices} starts them itself "
                    f"(or `torchrun --nproc_per_node {self.devices} your_script.py`); in a notebook use "
                    f"`%%train --devices {self.devices}`; several nodes need a launcher such as Slurm "
                    "(`lightning-lab run SCRIPT --backend slurm`). Or use devices=1 to train in this process."
                )
            self.workers_to_start = self.devices
        # Phase 3: the strategy.
        if strategy not in STRATEGIES:
            raise ConfigurationError(
                f"strategy={strategy!r} is not supported. Choose one of {', '.join(map(repr, STRATEGIES))}."
            )
        self.strategy = "ddp" if strategy == "ddp" or (strategy == "auto" and self.world_size > 1) else "single"
        if self.strategy == "single" and self.world_size > 1:
            raise ConfigurationError(
                f"strategy='single' cannot run in {self.world_size} processes; use strategy='ddp' or 'auto'."
            )
        # Phase 4: device of this process and precision.
        if self.accelerator == "cuda":
            index = self.environment.local_rank if self.environment.distributed else 0
            if isinstance(devices, (list, tuple)):
                index = list(devices)[index]
            self.device = torch.device("cuda", index)
        else:
            self.device = torch.device("cpu")
        self.precision = make_precision(precision, self.device)
        self._launched = False

    # ------------------------------------------------------------------ process facts
    @property
    def world_size(self) -> int:
        """Number of processes taking part."""
        return self.environment.world_size

    @property
    def rank(self) -> int:
        """This process's global rank."""
        return self.environment.global_rank

    @property
    def local_rank(self) -> int:
        """This process's rank on its node."""
        return self.environment.local_rank

    @property
    def is_global_zero(self) -> bool:
        """Whether this is rank 0, the process that writes files."""
        return self.environment.global_rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group spans several processes."""
        return self.world_size > 1

    # ------------------------------------------------------------------ set-up
    def launch(self) -> None:
        """Join the process group (gloo on CPU, NCCL on CUDA) when several processes take part."""
        if self._launched:
            return
        if self.workers_to_start:
            self.start_workers()
        self._launched = True
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if not self.distributed or dist.is_initialized():
            return
        env = self.environment
        os.environ.setdefault("MASTER_ADDR", env.master_addr)
        os.environ.setdefault("MASTER_PORT", str(env.master_port))
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, rank=env.global_rank, world_size=env.world_size,
            timeout=datetime.timedelta(minutes=30),
        )
        atexit.register(_leave_process_group)

    def start_workers(self, run_dir: str | os.PathLike[str] | None = None, name: str | None = None,
                      root: str | os.PathLike[str] | None = None) -> NoReturn:
        """Start this program again as ``devices`` DDP workers, wait for them, and exit with their code.

        Called by :meth:`launch` (and ``Trainer.fit``) when ``devices > 1`` in a process no launcher
        started. The workers run the whole program from the top; this process only supervises them
        (rank 0's output is shown here, every rank's is kept in the run's ``logs/``).

        Args:
            run_dir: The run directory the workers write; by default ``$LIGHTNING_LAB_RUN_DIR`` or a
                new one under ``root`` named ``name`` (default: the script's name).
            name: Run name for a new run directory.
            root: Run root for a new run directory.
        """
        from lightning_lab.engine.relaunch import RUN_DIR_ENV, run_workers
        from lightning_lab.runs.lifecycle import new_run_dir

        command = main_command()
        if command is None:  # checked in __init__; the program cannot be started again from here
            raise ConfigurationError("devices > 1 needs a script to start again; run it with python or torchrun.")
        if run_dir is None and os.environ.get(RUN_DIR_ENV):
            run_dir = os.environ[RUN_DIR_ENV]
        if run_dir is None:
            default = Path(command[1] if command[0] == "-m" else command[0]).stem
            run_dir = new_run_dir(root, name or default)
        print(f"lightning_lab: starting {self.workers_to_start} workers (torch elastic launch, "
              f"{'nccl' if self.accelerator == 'cuda' else 'gloo'}); run directory {run_dir}", file=sys.stderr,
              flush=True)
        raise SystemExit(run_workers(self.workers_to_start, command, Path(run_dir)))

    def setup(self, model: nn.Module, *optimizers: torch.optim.Optimizer) -> Any:
        """Move ``model`` to the device and, with several processes, wrap it for DDP.

        Returns ``model`` alone, or ``(model, *optimizers)`` when optimizers are passed. With
        ``16-mixed`` the optimizers are wrapped so ``optimizer.step()`` goes through the grad scaler.
        """
        self.launch()
        model = model.to(self.device)
        if self.distributed:
            model = self.wrap_ddp(model)
        if not optimizers:
            return model
        wrapped = tuple(_ScaledOptimizer(o, self) if self.precision.name == "16-mixed" else o for o in optimizers)
        return (model, *wrapped)

    def wrap_ddp(self, module: nn.Module) -> nn.Module:
        """Wrap ``module`` in ``DistributedDataParallel`` for this process's device."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def setup_dataloaders(self, *loaders: Any, seed: int | None = None) -> Any:
        """Give each DataLoader a seeded sampler that shards the data across processes.

        Iterate a returned loader per epoch with ``loader.iterate(epoch)`` (or plain ``iter``).
        Without ``seed``, rank 0 draws one and every process uses it (the shards must come from
        one shuffled order, or they overlap).
        """
        if seed is None:
            self.launch()
            seed = self.broadcast(fresh_seed())
        prepared = [
            prepare_loader(loader, seed=seed, rank=self.rank, world_size=self.world_size, train=True)
            for loader in loaders
        ]
        result = [_IterablePrepared(p) if isinstance(p, PreparedLoader) else p for p in prepared]
        return result[0] if len(result) == 1 else tuple(result)

    def to_device(self, batch: Any) -> Any:
        """Move a (nested) batch to this process's device."""
        return move_to_device(batch, self.device)

    # ------------------------------------------------------------------ training primitives
    def autocast(self) -> AbstractContextManager[Any]:
        """The precision's forward context (autocast for the mixed modes)."""
        return self.precision.forward_context()

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` (scaled under ``16-mixed``)."""
        self.precision.backward(loss)

    def clip_gradients(self, module: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float | None = None,
                       clip_val: float | None = None, norm_type: float = 2.0) -> torch.Tensor | None:
        """Clip gradients by total norm (``max_norm``) or by value (``clip_val``); returns the norm."""
        self.precision.unscale(getattr(optimizer, "optimizer", optimizer))
        params = [p for p in module.parameters() if p.grad is not None]
        if max_norm is not None:
            return torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
        if clip_val is not None:
            torch.nn.utils.clip_grad_value_(params, clip_val)
            return None
        raise ConfigurationError("clip_gradients needs max_norm or clip_val.")

    # ------------------------------------------------------------------ collectives
    def all_reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        """Reduce ``tensor`` over all processes with ``"sum"``, ``"mean"``, ``"max"`` or ``"min"``."""
        if op not in _REDUCE_OPS:
            raise ConfigurationError(f"all_reduce op={op!r}; choose one of {sorted(_REDUCE_OPS)}.")
        if not self.distributed:
            return tensor
        out = tensor.detach().clone().to(self._comm_device)
        dist.all_reduce(out, op=getattr(dist.ReduceOp, _REDUCE_OPS[op]))
        if op == "mean":
            out = out / self.world_size
        return out.to(tensor.device)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Stack ``tensor`` from every process: shape ``(world_size, *tensor.shape)``."""
        if not self.distributed:
            return tensor.unsqueeze(0)
        local = tensor.detach().contiguous().to(self._comm_device)
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local)
        return torch.stack(parts).to(tensor.device)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (picklable), in rank order."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """``obj`` as held by rank ``src``, on every process."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.distributed:
            dist.barrier()

    def sum_metric_totals(self, pairs: dict[str, list[float]]) -> dict[str, list[float]]:
        """Sum ``{name: [weighted total, weight]}`` over all processes (names may differ per rank)."""
        if not self.distributed:
            return pairs
        names = sorted(set().union(*self.all_gather_object(sorted(pairs))))
        packed = torch.tensor([pairs.get(n, [0.0, 0.0]) for n in names], dtype=torch.float64).reshape(-1, 2)
        packed = self.all_reduce(packed, op="sum")
        return dict(zip(names, packed.tolist(), strict=True))

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | os.PathLike[str], state: dict[str, Any]) -> None:
        """Write ``state`` atomically from rank 0 (modules and optimizers saved as their state_dicts).

        Every process must call it (it ends with a barrier).
        """
        if self.is_global_zero:
            write_checkpoint(path, {k: _state_of(v) for k, v in state.items()})
        self.barrier()

    def load(self, path: str | os.PathLike[str], state: dict[str, Any] | None = None) -> dict[str, Any]:
        """Read a checkpoint (``weights_only=True``) and load it into the objects in ``state``.

        Returns the entries of the file that ``state`` did not name.

        Raises:
            CheckpointError: the file is missing, truncated or holds more than tensors and plain data.
        """
        data = read_checkpoint(path, map_location=self.device)
        for key, target in (state or {}).items():
            if key not in data:
                raise CheckpointError(f"checkpoint {path} has no entry {key!r}; it holds {sorted(data)}.")
            if hasattr(target, "load_state_dict"):
                target.load_state_dict(data.pop(key))
            else:
                state[key] = data.pop(key)
        return data


class _ScaledOptimizer:
    """An optimizer whose ``step`` goes through the engine's grad scaler (``16-mixed``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, engine: Engine) -> None:
        self.optimizer = optimizer
        self._engine = engine

    def step(self, closure: Any = None) -> None:
        self._engine.precision.optimizer_step(self.optimizer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


class _IterablePrepared:
    """A prepared loader that counts its own epochs, for hand-written loops."""

    def __init__(self, prepared: PreparedLoader) -> None:
        self.prepared = prepared
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.prepared)

    def __iter__(self) -> Any:
        it = self.prepared.iterate(self.epoch)
        self.epoch += 1
        return it

    def iterate(self, epoch: int, skip_batches: int = 0) -> Any:
        return self.prepared.iterate(epoch, skip_batches)


def _state_of(value: Any) -> Any:
    if isinstance(value, nn.parallel.DistributedDataParallel):
        value = value.module
    if isinstance(value, _ScaledOptimizer):
        value = value.optimizer
    return value.state_dict() if hasattr(value, "state_dict") else value


def write_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, fsync, rename: a crash never leaves a torn checkpoint."""
    atomic_write(path, lambda f: torch.save(payload, f))


class BackgroundCheckpointWriter:
    """Writes checkpoints to disk on a background thread, so training does not wait for the disk.

    ``write`` first waits for the previous write, then serialises the payload (``torch.save``
    into memory: that is the snapshot, the live weights may change once it returns) on the
    calling thread, and hands the bytes to the process's checkpoint thread (started once and
    kept), which writes, fsyncs and renames them into place. Pickling holds the GIL wherever it
    runs, so doing it on the training thread costs training no more time than on another
    thread, and less CPU. ``wait`` blocks until the last write is on disk and re-raises its
    error, if any. The interpreter does not exit before a pending write is done.
    """

    def __init__(self) -> None:
        self._done: threading.Event | None = None
        self._error: BaseException | None = None
        self._path: str | None = None

    def write(self, path: str | os.PathLike[str], payload: dict[str, Any], to_cpu: bool = False) -> None:
        """Serialise ``payload`` now and write it to ``path`` in the background.

        Args:
            path: The checkpoint file.
            payload: What to save.
            to_cpu: Copy tensors on other devices to the CPU first (a checkpoint loads anywhere).

        Raises:
            CheckpointError: the previous write failed, or ``payload`` cannot be serialised.
        """
        self.wait()
        buffer = io.BytesIO()
        with sigint_deferred():  # a Ctrl-C now would lose this checkpoint: it is handled once it is handed over
            try:
                torch.save(_on_cpu(payload) if to_cpu else payload, buffer)
            except Exception as err:
                raise CheckpointError(f"writing checkpoint {path} failed: {err}") from err
            self._path = os.fspath(path)
            self._done = threading.Event()
            _CHECKPOINTS.submit(self._run, path, buffer.getbuffer(), self._done)

    def _run(self, path: str | os.PathLike[str], data: memoryview, done: threading.Event) -> None:
        try:
            atomic_write(path, lambda f: f.write(data))
        except BaseException as err:  # handed to the training thread by wait()
            self._error = err
        finally:
            done.set()

    def wait(self) -> None:
        """Block until the pending write is done.

        Raises:
            CheckpointError: the pending write failed (disk full, permissions...).
        """
        if self._done is not None:
            self._done.wait()
            self._done = None
        if self._error is not None:
            err, self._error = self._error, None
            raise CheckpointError(f"writing checkpoint {self._path} failed: {err}") from err


_CHECKPOINTS = BackgroundWorker("lightning_lab-checkpoint")  # one kept thread: no thread start per checkpoint


def _on_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu")
    if isinstance(value, dict):
        return type(value)((k, _on_cpu(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_on_cpu(v) for v in value)
    return value


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with errors that say what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for torn/foreign files
        text = str(err)
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if unsafe:
            raise CheckpointError(
                f"checkpoint {path} holds a Python object ({unsafe.group(1)}) that a safe load refuses: "
                "lightning_lab only loads checkpoints of tensors and plain data, so a checkpoint can never run code."
            ) from None
        detail = re.sub(r"\x1b\[[0-9;]*m", "", text.strip().splitlines()[0]) if text.strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated and cannot be read ({detail[:160]}).") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, not a dict of states.")
    return data


def _resolve_accelerator(accelerator: str) -> str:
    if accelerator not in ACCELERATORS:
        raise ConfigurationError(
            f"accelerator={accelerator!r} is not supported. Choose one of {', '.join(map(repr, ACCELERATORS))}."
        )
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise ConfigurationError(
                f"accelerator={accelerator!r} but no CUDA device is available here "
                f"(torch {torch.__version__}). Use accelerator='cpu' or 'auto'."
            )
        return "cuda"
    return "cpu"


def _resolve_devices(devices: int | str | list[int], accelerator: str, env: ClusterEnvironment) -> int:
    available = torch.cuda.device_count() if accelerator == "cuda" else (os.cpu_count() or 1)
    unit = "CUDA devices" if accelerator == "cuda" else "CPU cores"
    if devices == "auto":
        return env.local_world_size if env.distributed else 1
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if isinstance(devices, (list, tuple)):
        if accelerator != "cuda":
            raise ConfigurationError(f"devices={list(devices)!r} lists GPU indices, but the accelerator is cpu.")
        missing = [d for d in devices if not 0 <= d < available]
        if missing:
            raise ConfigurationError(f"devices={list(devices)!r}: GPU {missing} do not exist; this machine has {available}.")
        return len(devices)
    if devices == -1:
        return available
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ConfigurationError(f"devices must be 'auto', a positive integer or a list of GPU indices, got {devices!r}.")
    if devices > available:
        raise ConfigurationError(
            f"devices={devices} but this machine has {available} {unit}. Use devices={available} or fewer."
        )
    return devices


_RELEASE_WAIT_S = 0.1  # at exit, for gloo's threads to release what the last collectives held (see below)


def _leave_process_group() -> None:
    """Leave the process group the engine joined while the interpreter is still whole (an atexit hook).

    A gloo thread that finished a collective releases its tensors just after the caller was told
    it is done. A tensor Python has already dropped then needs the GIL to be freed, and a thread
    that asks for the GIL once the interpreter is shutting down is torn down mid-C++: the process
    dies with SIGABRT ("terminate called without an active exception") after training finished.
    Destroying the group does not always stop its threads (a DDP wrapper keeps the gloo backend
    alive), so the GIL is also let go for a moment here, for any such release to finish now.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    time.sleep(_RELEASE_WAIT_S)
