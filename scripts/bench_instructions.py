"""Engine overhead vs a hand-written loop, counted in CPU instructions (valgrind's callgrind).

``bench_overhead.py`` times the same fits on the wall clock, but on a shared virtual machine two
runs of the same loop differ by 30 % or more, far more than the 3 % the target is about. Counting
instructions is deterministic: the same program executes (almost) the same instructions however
busy the machine is. Each variant of ``bench_overhead.py`` (raw loop, lightning_lab ``Trainer.fit``)
runs in its own process under ``valgrind --tool=callgrind``; after the same untimed warm-up fit
as in ``bench_overhead.py``, counters are zeroed, the measured fit runs, and the counters are
dumped (client requests from a three-line C helper compiled here), so torch's import and the
set-up are not counted. Every thread of the process is counted (the metrics writer's too). The
engine's clock-driven work (a ``sys/...`` record a second, a metrics flush and a STOP-file look
every half second) is stretched by callgrind's ~100× slowdown, so it runs as often per step as it
does natively (see ``native_rates``).

What instructions leave out: time the process spends blocked (system calls such as ``fsync``,
waiting on a lock), and differences in instructions per cycle. It measures the framework's own
CPU work per step, which is what the overhead target is about; ``bench_overhead.py`` remains the
wall-clock view.

Needs valgrind with its headers and a C compiler (Debian: ``apt-get install valgrind gcc``).
Under callgrind code runs ~50× slower: about 5 minutes with the default sizes (the variants run
in parallel, one per core). Run from the repository root::

    .venv/bin/python scripts/bench_instructions.py
    .venv/bin/python scripts/bench_instructions.py --epochs 1 --samples 4096   # quicker
    .venv/bin/python scripts/bench_instructions.py --keep /tmp/cg   # then: callgrind_annotate /tmp/cg/callgrind.lab
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_overhead  # noqa: E402 - the variants are bench_overhead's, unchanged

HELPER_C = """
#include <valgrind/callgrind.h>
void lab_zero(void) { CALLGRIND_ZERO_STATS; }
void lab_dump(void) { CALLGRIND_DUMP_STATS_AT("measured fit"); }
"""
SLOWDOWN = 100.0  # callgrind runs this workload about 100× slower than natively (see native_rates)
VARIANTS = {"raw": bench_overhead.prepare_raw, "lab": bench_overhead.prepare_lab}


def build_helper(folder: Path) -> Path:
    """Compile the client-request helper; raise SystemExit with the fix when tools are missing."""
    for tool, package in (("valgrind", "valgrind"), ("cc", "gcc")):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench_instructions: `{tool}` not found; install it (Debian: apt-get install {package}).")
    if not Path("/usr/include/valgrind/callgrind.h").exists():
        raise SystemExit("bench_instructions: valgrind/callgrind.h not found; install valgrind's headers "
                         "(Debian: apt-get install valgrind).")
    source, library = folder / "helper.c", folder / "helper.so"
    source.write_text(HELPER_C)
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(library), str(source)], check=True)
    return library


def native_rates(slowdown: float) -> None:
    """Stretch the engine's clock-driven periodic work by callgrind's slowdown.

    A ``sys/...`` record every second, a flush of ``metrics.jsonl`` and a look for a STOP file
    every half second happen once or twice in a native 0.5 s fit, but about ``slowdown`` times
    more often in the same fit under callgrind, which would count that work ~100× over.
    Stretching their intervals by the slowdown keeps them at their native rate per step.
    """
    from lightning_lab.engine import stopping, timing
    from lightning_lab.runs.writer import RunWriter

    create, opened, stops = RunWriter.create.__func__, RunWriter.open.__func__, stopping.StopRequests.__init__
    if (create.__defaults__ != (None, 0.5) or opened.__defaults__ != (0.5, None)
            or stops.__defaults__ != (0.5, False) or timing.EMIT_INTERVAL_S != 1.0):
        raise SystemExit("bench_instructions: the engine's interval defaults changed; update native_rates().")
    timing.EMIT_INTERVAL_S *= slowdown
    create.__defaults__ = (None, 0.5 * slowdown)
    opened.__defaults__ = (0.5 * slowdown, None)
    stops.__defaults__ = (0.5 * slowdown, False)


def child(args: argparse.Namespace) -> int:
    """Inside valgrind: warm up, zero the counters, run the measured fit, dump the counters."""
    import torch

    torch.set_num_threads(1)
    native_rates(SLOWDOWN)
    os.environ.pop("LIGHTNING_LAB_RUN_DIR", None)
    helper = ctypes.CDLL(args.helper)
    data = bench_overhead.make_data(args.samples, args.seed)
    prepare = VARIANTS[args.child]
    bench_overhead.time_variant(prepare, data, args)  # warm-up, as in bench_overhead.py
    run, cleanup = prepare(data, args)
    try:
        # The first dump after a zero carries a fixed extra (~20 M instructions here, the same in
        # every variant): take and discard one before the measured fit.
        helper.lab_zero()
        helper.lab_dump()
        helper.lab_zero()
        loss = run()
        helper.lab_dump()
    finally:
        cleanup()
    print(f"{args.child} last loss {loss:.4f}")
    return 0


def instructions(dump: Path) -> int:
    """The instruction count in a callgrind dump (its ``summary:``/``totals:`` line)."""
    for line in dump.read_text().splitlines():
        match = re.match(r"(?:summary|totals):\s+(\d+)", line)
        if match:
            return int(match.group(1))
    raise RuntimeError(f"no instruction total in {dump}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fit (default 2)")
    parser.add_argument("--samples", type=int, default=16384, help="dataset size (default 16384: 512 steps/epoch)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, init and shuffling (default 0)")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps here (for callgrind_annotate)")
    parser.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--helper", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    steps = -(-args.samples // args.batch_size) * args.epochs
    print(f"MLP {bench_overhead.IN_FEATURES}→{bench_overhead.HIDDEN}→{bench_overhead.CLASSES}, SGD, batch "
          f"{args.batch_size}, {args.epochs} epoch(s) = {steps} steps, 1 torch thread; instructions of the measured "
          "fit (callgrind, all threads), after one warm-up fit", flush=True)
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench_instructions_") as tmp:
        folder = Path(tmp)
        helper = build_helper(folder)
        started = time.perf_counter()
        procs = {}
        for name in VARIANTS:
            command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/{name}.%p",
                       sys.executable, str(Path(__file__).resolve()), "--child", name, "--helper", str(helper),
                       "--epochs", str(args.epochs), "--samples", str(args.samples),
                       "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
            procs[name] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, proc in procs.items():
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"bench_instructions: the {name} variant failed under valgrind:\n{err[-3000:]}")
            (dump,) = [p for p in folder.glob(f"{name}.*.2")]  # the second dump: the measured fit
            counts[name] = instructions(dump)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(dump, args.keep / f"callgrind.{name}")
            print(f"  {out.strip()}")
        print(f"(valgrind took {time.perf_counter() - started:.0f} s)")
    raw, lab = counts["raw"], counts["lab"]
    ratio = lab / raw
    print()
    print(f"{'variant':<24}{'instructions':>16}{'per step':>12}{'vs raw':>9}")
    print(f"{'raw PyTorch loop':<24}{raw:>16,}{raw / steps:>12,.0f}{1:>8.3f}×")
    print(f"{'lightning_lab Trainer':<24}{lab:>16,}{lab / steps:>12,.0f}{ratio:>8.3f}×")
    print(f"framework instructions per step: {(lab - raw) / steps:,.0f} (fixed per-fit costs included)")
    target = bench_overhead.OVERHEAD_TARGET
    print(f"target lightning_lab/raw ≤ {target:.2f} in instructions: {'MET' if ratio <= target else 'NOT MET'} "
          f"({ratio:.3f}×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
