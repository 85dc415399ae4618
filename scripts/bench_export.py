"""Benchmark: export time of a generated 200-cell notebook (target: at most 1 s; SPEC "Performance").

The notebook mixes what real ones hold: imports spread over cells, parameters, helper functions
and classes (some redefined), data cells that build on each other, plots, displays, shell lines and
magics, then a ``%%train`` cell. Time is the median of several exports (the imports the exporter
needs are warmed by a first, untimed export).

    python scripts/bench_export.py [--cells 200] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import nbformat


def generated_notebook(cells: int = 200) -> nbformat.NotebookNode:
    """A notebook of ``cells`` cells whose last cell is ``%%train``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    add = lambda source: nb.cells.append(nbformat.v4.new_code_cell(source))  # noqa: E731
    add("%load_ext lightning_lab\n%matplotlib inline")
    parameters = nbformat.v4.new_code_cell("# Parameters\nmax_epochs = 3\nlr = 0.01\nhidden = 32")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells.append(parameters)
    add("import math\nimport os\nimport random\n\nimport numpy as np\nimport torch\nfrom torch import nn")
    add("import torch.nn.functional as F\nfrom torch.utils.data import DataLoader, TensorDataset\n"
        "from lightning_lab import LabModule")
    add("torch.manual_seed(0)\nx0 = torch.randn(64, 8)")
    xs, helpers, i = ["x0"], [], 0
    while len(nb.cells) < cells - 3:
        kind, x = i % 8, xs[-1]
        if kind == 0:
            add(f"def helper_{i}(t, scale=1.0):\n    \"\"\"Helper {i}.\"\"\"\n    return torch.tanh(t * scale) + {i % 5}")
            helpers.append(f"helper_{i}")
        elif kind == 1:
            add(f"x{i} = {helpers[-1]}({xs[-min(len(xs), 3)]})\nx{i}[:, 0] *= 0.5  # in place")
            xs.append(f"x{i}")
        elif kind == 2:
            add(f"plot_data_{i} = {x}.mean(0)\nprint(plot_data_{i})\n{x}.shape")
        elif kind == 3:
            add(f"!echo cell {i}\n%time y{i} = ({x}.sum(1) > 0).long()")
        elif kind == 4:
            add(f"class Block{i}(nn.Module):\n    def __init__(self, width={i % 7 + 4}):\n        super().__init__()\n"
                f"        self.fc = nn.Linear(8, width)\n\n    def forward(self, t):\n"
                f"        return {helpers[-1]}(self.fc(t))")
        elif kind == 5:
            add(f"stats_{i} = {{'mean': float({x}.mean()), 'std': float({x}.std())}}\nstats_{i}")
        elif kind == 6:
            add(f"def {helpers[-1]}(t, scale=1.0):\n    return torch.sigmoid(t * scale)  # redefined\n\n"
                f"z{i} = [math.sqrt(abs(v)) for v in {x}[0].tolist()]")
        else:
            add(f"random.seed({i})\nnp.random.seed({i})\nnoise_{i} = np.random.rand(3)")
        i += 1
    add("class Model(LabModule):\n    def __init__(self, hidden=16, lr=0.1):\n        super().__init__()\n"
        "        self.save_hyperparameters()\n        self.net = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), "
        "nn.Linear(hidden, 2))\n\n    def training_step(self, batch, batch_idx):\n        x, y = batch\n"
        "        loss = F.cross_entropy(self.net(helper_0(x)), y)\n        self.log('train_loss', loss)\n"
        "        return loss\n\n    def configure_optimizers(self):\n"
        "        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)")
    add(f"loader = DataLoader(TensorDataset({xs[-1]}, ({xs[-1]}.sum(1) > 0).long()), batch_size=16)")
    add("%%train --max-epochs $max_epochs --seed 0 --name bench\nmodel = Model(hidden=hidden, lr=lr)")
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    from lightning_lab.export import export_notebook

    nb = generated_notebook(args.cells)
    first = export_notebook(nb, write=False)  # warm: IPython's transformer, nbformat
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        export_notebook(nb, write=False)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"export of a {len(nb.cells)}-cell notebook: median {median * 1000:.0f} ms over {args.repeats} runs "
          f"(min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms); target <= 1000 ms")
    print(f"  kept {len(first.kept_cells)} cells, left out {len(first.dropped_cells)}, "
          f"{len(first.dropped_lines)} magic/shell lines; script {len(first.script.splitlines())} lines")


if __name__ == "__main__":
    main()
