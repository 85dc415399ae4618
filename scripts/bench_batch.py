"""Batch throughput: 8 grid points of a short training, `lightning-lab batch --workers 2` vs one by one.

The baseline is what people do without the batch command: plain ``papermill.execute_notebook`` in a
loop, in one process. Both are timed as separate processes, wall clock, from interpreter start to
the last notebook written, headless and with the same run root layout. Target (SPEC, Performance):
2 workers on 2 cores ≥ 1.6× faster.

    .venv/bin/python scripts/bench_batch.py [--max-epochs 2] [--workers 2] [--repeat 1] [--notebook PATH]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRID = {"lr": [1e-3, 3e-3, 1e-2, 3e-2], "hidden": [32, 64]}  # 8 points

BASELINE = """
import json, sys
from pathlib import Path
import os
import papermill
notebook, out, grid = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
for i, params in enumerate(grid):
    os.environ["LIGHTNING_LAB_ROOT"] = str(out / "runs" / str(i))
    papermill.execute_notebook(notebook, str(out / f"{i}.ipynb"), parameters=params, progress_bar=False)
"""

BATCH = """
import sys
from lightning_lab.batch import main_batch
sys.exit(main_batch(sys.argv[1:]))
"""


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"bench_batch: {' '.join(cmd[:3])}… failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", default=str(ROOT / "notebooks" / "01_quickstart.ipynb"))
    parser.add_argument("--max-epochs", type=int, default=2, help="epochs per point (default 2)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the pair this many times and report the median (a shared machine is noisy)")
    args = parser.parse_args()

    points = [{"lr": lr, "hidden": h, "max_epochs": args.max_epochs}
              for lr, h in itertools.product(GRID["lr"], GRID["hidden"])]
    env = {**os.environ, "LIGHTNING_LAB_NO_WIDGET": "1"}
    grid_args = ["--grid", "lr=" + ",".join(map(repr, GRID["lr"])),
                 "--grid", "hidden=" + ",".join(map(str, GRID["hidden"])),
                 "--param", f"max_epochs={args.max_epochs}"]
    print(f"{len(points)} points of {Path(args.notebook).name} (max_epochs={args.max_epochs}), "
          f"{os.cpu_count()} CPU cores", flush=True)
    loops, batches = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
            base_dir, batch_dir = Path(tmp) / "loop", Path(tmp) / "batch"
            base_dir.mkdir()
            loops.append(timed([sys.executable, "-c", BASELINE, args.notebook, str(base_dir), json.dumps(points)], env))
            print(f"one by one (papermill in a loop): {loops[-1]:6.1f} s", flush=True)
            batches.append(timed([sys.executable, "-c", BATCH, args.notebook, *grid_args,
                                  "--workers", str(args.workers), "--out", str(batch_dir)], env))
            print(f"lightning-lab batch --workers {args.workers}: {batches[-1]:6.1f} s", flush=True)
            with open(batch_dir / "results.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            assert len(rows) == len(points) and all(r["status"] == "completed" for r in rows), rows
    # each repeat runs the two back to back: its ratio is the fairest; report the median one
    ratios = sorted(loop / batch for loop, batch in zip(loops, batches, strict=True))
    speedup = statistics.median(ratios)
    loop_s, batch_s = statistics.median(loops), statistics.median(batches)
    verdict = "meets" if speedup >= 1.6 else "misses"
    spread = f" (runs: {', '.join(f'{r:.2f}x' for r in ratios)})" if len(ratios) > 1 else ""
    print(f"speedup: {speedup:.2f}x{spread} — {verdict} the 1.6x target")
    print(f"README: Batch — {len(points)} grid points of `{Path(args.notebook).name}` (max_epochs={args.max_epochs}) "
          f"on {os.cpu_count()} CPU cores: one by one with papermill {loop_s:.1f} s, "
          f"`lightning-lab batch --workers {args.workers}` {batch_s:.1f} s — **{speedup:.2f}× faster** (target ≥ 1.6×).")


if __name__ == "__main__":
    main()
