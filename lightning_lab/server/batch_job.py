"""``python -m lightning_lab.server.batch_job SPEC_JSON``: one sweep started from JupyterLab.

Exit code 0 when every point completed, 1 when a point failed, 2 for a mistake in the sweep
(printed as one line). Progress goes to stdout/stderr, which the server sends to the sweep's log.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from lightning_lab.errors import LabError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep described by the JSON spec ``argv[0]`` (see ``BatchJobs.start``)."""
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    from lightning_lab.batch import run

    try:
        result = run(spec["notebook"], spec["grid"], spec["params"], workers=spec["workers"], out=spec["out"],
                     rerun=spec["rerun"])
    except LabError as exc:
        print(f"lightning-lab batch: {exc}", file=sys.stderr)
        return 2
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
