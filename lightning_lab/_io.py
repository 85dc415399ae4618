"""Crash-safe file writes: temporary file, fsync, atomic rename, fsync of the folder.

Checkpoints are made durable before they are renamed into place (``sync=True``). State files
rewritten many times a run (``run.json``, ``launch.json``) are renamed into place at once and
made durable moments later by a background thread (``sync="later"``): readers and a crashed
process still only ever see a complete file, and the training loop does not wait for the disk.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import (changing it later from a thread would be unsafe)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any],
                 sync: bool | Literal["later"] = True) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``.

    A reader (or a crash) sees either the old file or the complete new one, never a torn one.

    Args:
        path: The file to write.
        write: Writes the content to the binary file it is given.
        sync: ``True``: the data reaches the disk before the rename, and the rename right after.
            ``"later"``: renamed at once, both made durable by a background thread within moments
            (and before the interpreter exits). ``False``: left to the operating system.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; others on a shared cluster may read runs
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if sync is True:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync is True:
        _fsync(path.parent)
    elif sync == "later":
        sync_later(path)


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block ends; then it is delivered to the usual handler.

    For short sections an interrupt must not tear, such as serialising a checkpoint and handing it
    to the writer thread. Elsewhere than on the main thread (where signals are not handled), or when
    SIGINT's handler was installed outside Python, it does nothing.
    """
    previous = signal.getsignal(signal.SIGINT)
    # Off the main thread signals cannot be handled; a handler installed outside Python could not be put back.
    if previous is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)  # now to whoever handles it: stop request, KeyboardInterrupt...


def atomic_write_json(path: str | os.PathLike[str], data: Any, sync: bool | Literal["later"] = "later") -> None:
    """Write ``data`` as indented JSON atomically (see :func:`atomic_write`; durable moments later by default)."""
    payload = (json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n").encode()
    atomic_write(path, lambda f: f.write(payload), sync=sync)


class BackgroundWorker:
    """One daemon thread, started on first use, that runs the calls handed to it in order.

    The interpreter does not exit before the calls handed over so far are done (an atexit wait);
    a call reports its own errors (the thread only survives them).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        atexit.register(self.wait)

    def submit(self, call: Callable[..., Any], *args: Any) -> None:
        """Run ``call(*args)`` on the thread after what was handed over before."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        self._queue.put((call, args))

    def wait(self) -> None:
        """Return once every call handed over so far is done."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()

    def _run(self) -> None:
        while True:
            call, args = self._queue.get()
            try:
                call(*args)
            except Exception:  # noqa: BLE001, S110 - the call reports its own errors; the thread lives on
                pass
            finally:
                self._queue.task_done()


_SYNCER = BackgroundWorker("lightning_lab-fsync")


def sync_later(path: str | os.PathLike[str]) -> None:
    """Make ``path`` (and its folder entry) durable on a background thread, before the interpreter exits."""
    path = Path(path)
    _SYNCER.submit(_fsync_with_folder, path)


def wait_for_syncs() -> None:
    """Block until every :func:`sync_later` so far is done."""
    _SYNCER.wait()


def _fsync_with_folder(path: Path) -> None:
    _fsync(path)
    _fsync(path.parent)


def _json_default(value: Any) -> Any:
    # Tensors, numpy scalars, paths: anything with a float/str form goes in as that.
    if hasattr(value, "item"):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            pass
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def _fsync(path: Path) -> None:
    """fsync a file or a folder by path (any descriptor of it will do on Linux)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # removed since: nothing left to make durable
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
