"""The exporter: what it keeps and drops, its errors, its CLI, lint-clean output, a robustness corpus,
and the round trip: a notebook run in a real kernel and its exported script run with plain ``python``
log the same final metrics."""

from __future__ import annotations

import importlib.util
import os
import py_compile
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from lightning_lab.errors import LabError
from lightning_lab.export import ExportError, export_notebook, magic_export, main_export
from lightning_lab.runs import list_runs

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
TODAY = date(2025, 1, 2)


def notebook(*cells: str, language: str = "python") -> nbformat.NotebookNode:
    """A notebook of code cells; a cell starting with ``# md`` is markdown, one starting with ``# parameters``
    is tagged ``parameters`` (as papermill expects)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": language}
    for source in cells:
        if source.startswith("# md"):
            nb.cells.append(nbformat.v4.new_markdown_cell(source[4:].strip()))
            continue
        cell = nbformat.v4.new_code_cell(source)
        if source.startswith("# parameters"):
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    return nb


def code_of(script: str) -> list[str]:
    """The script's lines without the header comment, stripped."""
    return [line.strip() for line in script.split("\n\n", 1)[1].splitlines()]


def header_of(script: str) -> str:
    return script.split("\n\n", 1)[0]


IMPORTS = """import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_lab import LabModule"""

NET = """class Net(LabModule):
    def __init__(self, lr=0.1, hidden=8):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)"""

LOADER = "loader = DataLoader(TensorDataset(torch.randn(32, 4), torch.zeros(32).long()), batch_size=8)"

# (id, cells, lines the script must contain, lines it must not contain, text the header must contain)
UNIT_CASES = [
    ("imports spread over cells",
     ["import os, sys\nimport torch", "import numpy as np", "from torch import nn\nimport torch.nn.functional as F",
      "from torch.utils.data import DataLoader, TensorDataset, random_split\nfrom lightning_lab import LabModule",
      NET, LOADER, "%%train\nmodel = Net()"],
     ["import torch", "from torch import nn", "import torch.nn.functional as F",
      "from torch.utils.data import DataLoader, TensorDataset"],
     ["import os, sys", "import numpy as np", "import os", "import sys"], ""),
    ("redefinition: the latest before use wins",
     [IMPORTS, "def width():\n    return 16", NET, "def width():\n    return 4", LOADER,
      "%%train\nmodel = Net(hidden=width())", "def width():\n    return 100"],
     ["return 4"], ["return 16", "return 100"], "cell 7: def width():  (after the %%train cell)"),
    ("helper used only inside a class method",
     [IMPORTS, "def act(x):\n    return torch.tanh(x)\n\ndef unused(x):\n    return x",
      NET.replace("self.layer(x)", "self.layer(act(x))"), LOADER, "%%train\nmodel = Net()"],
     ["def act(x):", "return torch.tanh(x)"], ["def unused(x):"], ""),
    ("a decorator and what it reads",
     [IMPORTS, "REGISTRY = []\n\ndef register(cls):\n    REGISTRY.append(cls)\n    return cls",
      "@register\n" + NET, LOADER, "%%train\nmodel = Net()"],
     ["REGISTRY = []", "def register(cls):", "@register"], [], ""),
    ("a global constant as a default argument",
     [IMPORTS, "HIDDEN = 12\nUNUSED = 3", NET.replace("hidden=8", "hidden=HIDDEN"), LOADER,
      "%%train\nmodel = Net()"],
     ["HIDDEN = 12"], ["UNUSED = 3"], ""),
    ("plotting and display cells",
     [IMPORTS, "import matplotlib.pyplot as plt", NET, LOADER, "plt.plot([1, 2, 3])\nplt.title('x')\nplt.show()",
      "loader", "print(len(loader))", "%%train\nmodel = Net()"],
     [], ["import matplotlib.pyplot as plt", "plt.show()", "print(len(loader))", "loader"],
     "cell 5: plt.plot([1, 2, 3])  (not needed to train)"),
    ("shell lines and %matplotlib",
     ["%load_ext lightning_lab\n%matplotlib inline", "!pip install something\n" + IMPORTS, NET, LOADER,
      "%%train --max-epochs 2\nmodel = Net()"],
     ["import torch"], ["get_ipython"], "cell 2, line 1: !pip install something"),
    ("%time on a needed line keeps the statement",
     [IMPORTS, NET, "%time " + LOADER, "%time unused = 1", "%%train\nmodel = Net()"],
     [LOADER], ["unused = 1", "%time"], "(magic removed, statement kept)"),
    ("a mutation of a needed object",
     [IMPORTS, NET, LOADER, "pretrained = Net()\nother = Net()",
      "pretrained.layer[0].weight.data.fill_(0.5)\nother.eval()",
      "for p in pretrained.parameters():\n    p.requires_grad_(True)",
      "%%train\nmodel = Net()\nmodel.load_state_dict(pretrained.state_dict())"],
     ["pretrained = Net()", "pretrained.layer[0].weight.data.fill_(0.5)", "for p in pretrained.parameters():",
      "model.load_state_dict(pretrained.state_dict())"],
     ["other = Net()", "other.eval()"], ""),
    ("a function that mutates its argument, and one that assigns a global",
     [IMPORTS, NET, "def freeze(m):\n    for p in m.parameters():\n        p.requires_grad = False",
      "def load():\n    global DATA\n    DATA = torch.randn(32, 4)", "backbone = Net()\nfreeze(backbone)\nload()",
      "loader = DataLoader(TensorDataset(DATA, torch.zeros(32).long()), batch_size=8)",
      "%%train\nmodel = Net()\nmodel.load_state_dict(backbone.state_dict())"],
     ["freeze(backbone)", "load()", "global DATA"], [], ""),
    ("a cell that is only a bare expression",
     [IMPORTS, NET, LOADER, "Net()", "%%train\nmodel = Net()"],
     [], ["Net()"], "cell 4: Net()  (not needed to train)"),
    ("seed calls are kept",
     [IMPORTS + "\nimport random", "torch.manual_seed(0)\nrandom.seed(1)", NET, LOADER, "%%train\nmodel = Net()"],
     ["torch.manual_seed(0)", "random.seed(1)", "import random"], [], ""),
    ("augmented assignments and del of other names",
     [IMPORTS, NET, "batch = 4\nbatch += 4\nbatch *= 2\ntmp = 1\ndel tmp",
      "loader = DataLoader(TensorDataset(torch.randn(32, 4), torch.zeros(32).long()), batch_size=batch)",
      "%%train\nmodel = Net()"],
     ["batch = 4", "batch += 4", "batch *= 2"], ["tmp = 1", "del tmp"], ""),
    ("papermill parameters flow into the option defaults",
     ["# parameters\nepochs = 3\nrun_name = 'demo'\nlr = 0.05\nhidden = 6", IMPORTS, NET, LOADER,
      "%%train --max-epochs $epochs --name {run_name} --seed 7\nmodel = Net(lr=lr, hidden=hidden)"],
     ["epochs = 3", "run_name = 'demo'", 'parser.add_argument("--max-epochs", type=int, default=epochs,',
      'parser.add_argument("--name", default=run_name, help="run name; None: the model\'s class name")',
      'parser.add_argument("--seed", type=int, default=7, help="seed every RNG before the model is built")',
      'parser.add_argument("--lr", type=float, default=lr, help="lr of Net()")',
      "model = Net(lr=args.lr, hidden=args.hidden)", "name=args.name,"], [], ""),
    ("literal hyperparameters of every type",
     [IMPORTS, NET.replace("hidden=8):", "hidden=8, act='tanh', bias=True, sizes=(4,)):"), LOADER,
      "%%train\nmodel = Net(lr=3e-3, hidden=64, act='relu', bias=False, sizes=(8, 4))"],
     ['parser.add_argument("--lr", type=float, default=3e-3, help="lr of Net()")',
      'parser.add_argument("--hidden", type=int, default=64, help="hidden of Net()")',
      "parser.add_argument(\"--act\", default='relu', help=\"act of Net()\")",
      'parser.add_argument("--bias", action=argparse.BooleanOptionalAction, default=False, help="bias of Net()")',
      'parser.add_argument("--sizes", type=int, nargs="+", default=(8, 4), help="sizes of Net()")',
      "model = Net(lr=args.lr, hidden=args.hidden, act=args.act, bias=args.bias, sizes=tuple(args.sizes))"],
     [], ""),
    ("data found by --data/--val; loader literals become options",
     [IMPORTS, NET, "ds = TensorDataset(torch.randn(32, 4), torch.zeros(32).long())",
      "%%train --model net --data tr --val va\nnet = Net()\ntr = DataLoader(ds, batch_size=8, shuffle=True)\n"
      "va = DataLoader(ds, batch_size=16)"],
     ["trainer.fit(net, tr, va, ckpt_path=\"last\" if args.resume else None)",
      "tr = DataLoader(ds, batch_size=args.batch_size, shuffle=args.shuffle)",
      "va = DataLoader(ds, batch_size=args.va_batch_size)"], [], ""),
    ("no %%train cell: all code, magics removed, unused imports dropped",
     ["import os\nimport sys\n!ls\n%matplotlib inline", "print(os.getcwd())", "x = [i for i in range(3)]\nx"],
     ["import os", "print(os.getcwd())", "x = [i for i in range(3)]", "x"], ["import sys", "get_ipython"],
     "cell 1, line 3: !ls"),
]


def _unit_notebook(cells: list[str]) -> nbformat.NotebookNode:
    return notebook(*cells)


@pytest.mark.parametrize("case", UNIT_CASES, ids=[c[0] for c in UNIT_CASES])
def test_unit_table_keeps_and_drops(case):
    _, cells, kept, dropped, header = case
    result = export_notebook(_unit_notebook(cells), write=False, today=TODAY)
    lines = code_of(result.script)
    for line in kept:
        assert line in lines, f"expected {line!r} in\n{result.script}"
    for line in dropped:
        assert line not in lines, f"expected {line!r} left out of\n{result.script}"
    assert header in header_of(result.script)


def test_quickstart_exports_a_readable_script(tmp_path):
    result = export_notebook(NOTEBOOKS / "01_quickstart.ipynb", tmp_path / "train.py", today=TODAY)
    script = (tmp_path / "train.py").read_text()
    assert script == result.script and result.output == tmp_path / "train.py"
    assert script.startswith("# Training script exported from 01_quickstart.ipynb by lightning-lab on 2025-01-02.")
    assert "#   cell 2, line 1: %load_ext lightning_lab" in script and "(after the %%train cell)" in script
    assert not any(re.search(r"\bget_ipython\b|\b_run\b", line) for line in code_of(script))
    assert "from lightning_lab import LabModule, Trainer, seed_everything" in script  # merged, not repeated
    body = script[script.index("def main"):]
    assert body.index("seed_everything(args.seed)") < body.index("model = Classifier(hidden=args.hidden, lr=args.lr)")
    assert script.rstrip().endswith('if __name__ == "__main__":\n    main()')
    assert [o.flag for o in result.hyperparameters] == ["--hidden", "--lr"]
    assert result.train_cell == 7 and result.kept_cells == [3, 4, 5, 6, 7] and result.dropped_cells == [2, 8, 9]
    again = export_notebook(NOTEBOOKS / "01_quickstart.ipynb", write=False, today=TODAY)
    assert again.script.replace("python SCRIPT.py", "python train.py") == script  # formatted stably


def test_several_train_cells_choose_with_cell(tmp_path):
    nb = notebook(IMPORTS, NET, LOADER, "%%train --name first\nmodel = Net(lr=0.5)",
                  "%%train --name second\nmodel = Net(lr=0.1)")
    last = export_notebook(nb, write=False)
    first = export_notebook(nb, cell=4, write=False)
    assert last.train_cell == 5 and "default=\"second\"" in last.script and "default=0.1" in last.script
    assert first.train_cell == 4 and "default=\"first\"" in first.script and "default=0.5" in first.script
    assert "cell 4, line 1: %%train --name first" in header_of(last.script)
    with pytest.raises(ExportError, match=r"cell 3: not a %%train cell of notebook; the %%train cells are 4, 5"):
        export_notebook(nb, cell=3, write=False)


def test_body_that_rebinds_a_notebook_name_declares_it_global():
    nb = notebook(IMPORTS, NET, LOADER, "width = 4", "%%train\nwidth = width * 2\nmodel = Net(hidden=width)")
    script = export_notebook(nb, write=False).script
    assert "    global width" in script
    namespace: dict = {}
    exec(compile(script.replace("main()\n", "pass\n"), "s", "exec"), namespace)  # defines without training


ERROR_CASES = [
    ("unresolved name", [IMPORTS, NET, LOADER, "%%train\nmodel = Net(lr=lr)"],
     r"cell 4: name 'lr' is used but never defined or imported before it"),
    ("defined only later", [IMPORTS, NET, LOADER, "%%train\nmodel = Net(lr=rate)", "rate = 0.1"],
     r"cell 4: name 'rate' .* defined later, in cell 5"),
    ("unresolved inside a method", [IMPORTS, NET.replace("self.layer(x)", "self.layer(scale(x))"), LOADER,
                                    "%%train\nmodel = Net()"], r"cell 2: name 'scale' is used but never defined"),
    ("a cell that does not parse", [IMPORTS, "x = 1\ny = = 2", NET, LOADER, "%%train\nmodel = Net()"],
     r"cell 2, line 2: invalid syntax: `y = = 2`"),
    ("a needed shell assignment", [IMPORTS, NET, "files = !ls\nn = len(files)", LOADER,
                                   "%%train\nmodel = Net(hidden=n)"], r"cell 3, line 1: `!ls` runs a shell command"),
    ("a shell assignment in the %%train body", [IMPORTS, NET, LOADER, "%%train\nout = !nproc\nmodel = Net()"],
     r"cell 4, line 2: `!nproc` runs a shell command"),
    ("deleted before use", [IMPORTS, NET, LOADER, "del loader\nloader2 = 1", "%%train --data loader\nmodel = Net()"],
     r"cell 5: 'loader' is deleted \(`del loader`\) in cell 4"),
    ("two models", [IMPORTS, NET, LOADER, "%%train\na = Net()\nb = Net()"], r"cell 4: the %%train cell could train a, b"),
    ("no model", [IMPORTS, NET, LOADER, "%%train\nx = 1"], r"cannot tell which variable holds the model"),
    ("no data", [IMPORTS, NET, "%%train\nmodel = Net()"], r"cell 3: the export finds no data"),
    ("a bad %%train option", [IMPORTS, NET, LOADER, "%%train --max-epochs\nmodel = Net()"],
     r"cell 4: the %%train line `--max-epochs` cannot be read"),
    ("a number that is not", [IMPORTS, NET, LOADER, "%%train --max-epochs five\nmodel = Net()"],
     r"cell 4: %%train --max-epochs five: not a number"),
    ("_run from %%train", [IMPORTS, NET, LOADER, "%%train\nmodel = Net()", "%%train\nmodel = Net(lr=_run.final['x'])"],
     r"cell 5: name '_run' .* set by %%train"),
    ("top-level await", ["import asyncio\nawait asyncio.sleep(0)"], r"would not compile: 'await' outside function"),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors_name_the_cell(case):
    _, cells, message = case
    with pytest.raises(ExportError, match=message):
        export_notebook(notebook(*cells), write=False)


def test_file_errors(tmp_path):
    with pytest.raises(ExportError, match=r"no such notebook"):
        export_notebook(tmp_path / "missing.ipynb")
    (tmp_path / "bad.ipynb").write_text("{not json")
    with pytest.raises(ExportError, match=r"bad.ipynb is not a notebook Jupyter can read"):
        export_notebook(tmp_path / "bad.ipynb")
    nbformat.write(notebook("x <- 1", language="R"), tmp_path / "r.ipynb")
    with pytest.raises(ExportError, match=r"r.ipynb is a R notebook"):
        export_notebook(tmp_path / "r.ipynb")
    nbformat.write(notebook("x = 1"), tmp_path / "same.ipynb")
    with pytest.raises(ExportError, match=r"would overwrite the notebook"):
        export_notebook(tmp_path / "same.ipynb", tmp_path / "same.ipynb")


def test_cli_writes_the_script_and_lists_dropped_lines(tmp_path, capsys):
    nb = tmp_path / "nb.ipynb"
    nbformat.write(notebook("%load_ext lightning_lab", IMPORTS, NET, "!echo hi\n" + LOADER,
                            "%%train --max-epochs 1\nmodel = Net()"), nb)
    assert main_export([str(nb)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'nb.py'} from nb.ipynb (%%train in cell 5" in out
    assert "cell 1, line 1: %load_ext lightning_lab" in out and "cell 4, line 1: !echo hi" in out
    assert (tmp_path / "nb.py").is_file()
    assert main_export([str(nb), "-o", str(tmp_path / "out" / "t.py"), "--cell", "5"]) == 0
    assert (tmp_path / "out" / "t.py").is_file()


def test_export_magic_exports_the_kernel_notebook(tmp_path, monkeypatch, capsys):
    nbformat.write(notebook(IMPORTS, NET, LOADER, "%%train --max-epochs 1\nmodel = Net()"), tmp_path / "nb.ipynb")
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert magic_export("") is None
    assert "%export cannot tell which notebook this kernel runs" in capsys.readouterr().err
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "nb.ipynb"))
    result = magic_export(f"{tmp_path / 'script.py'} --cell 4")
    assert result is not None and result.output == tmp_path / "script.py" and result.output.is_file()
    assert f"wrote {tmp_path / 'script.py'}" in capsys.readouterr().out


def test_cli_error_is_one_line_and_writes_nothing(tmp_path, capsys):
    nb = tmp_path / "nb.ipynb"
    nbformat.write(notebook(IMPORTS, NET, LOADER, "%%train\nmodel = Net(lr=missing)"), nb)
    assert main_export([str(nb), "-o", str(tmp_path / "t.py")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lightning-lab export: cell 4: name 'missing'") and err.count("\n") == 1
    assert not (tmp_path / "t.py").exists()
    assert main_export(["--help"]) == 0
    assert main_export([str(nb), "--cell", "x"]) == 2


# ---- lint: every exported script passes pyflakes (ruff --select F) and py_compile -------------------------


def test_exported_scripts_pass_ruff_and_py_compile(tmp_path):
    paths = []
    for i, (_, cells, *_rest) in enumerate(UNIT_CASES):
        paths.append(export_notebook(_unit_notebook(cells), tmp_path / f"unit_{i}.py").output)
    for name in ("00_engine", "01_quickstart"):
        paths.append(export_notebook(NOTEBOOKS / f"{name}.ipynb", tmp_path / f"{name}.py").output)
    for name, nb in MESSY.items():
        paths.append(export_notebook(nb, tmp_path / f"{name}.py").output)
    for path in paths:
        py_compile.compile(str(path), doraise=True)
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--no-cache", str(tmp_path)],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


# ---- robustness: export never fails with anything but a clear LabError ---------------------------------------

GENERATED = {
    "empty": [],
    "markdown only": ["# md # Title\nSome text."],
    "comments and blank cells": ["# just a comment\n", "   \n", "\n# another\n\n"],
    "unicode": ["café = 'crème'  # é\n名字 = café + '中文'\nprint(名字)"],
    "crlf line endings": ["import os\r\nx = 1\r\nprint(x, os.sep)\r\n"],
    "semicolons and comments": ["a = 1; b = 2  # both\nc = a + b  # sum\nprint(c)"],
    "magics inside blocks": ["import os\nfor i in range(2):\n    !echo {i}\n    %time j = i\nwith open(os.devnull) as f:\n"
                             "    %ls\nprint(j)"],
    "cell magics": ["%%bash\necho hi", "%%html\n<b>x</b>", "%%writefile out.txt\nhello", "%%capture cap\nx = 1",
                    "print(x)"],
    "help syntax": ["import os\nos?", "os.path??", "%pinfo os"],
    "star import": ["from math import *\nprint(sqrt(2), pi)"],
    "modern syntax": ["def f(x, /, *, y=2, **kw):\n    match x:\n        case [a, *rest]:\n            return a + len(rest)\n"
                      "        case {'k': v, **others}:\n            return v + len(others)\n        case _:\n            return 3",
                      "print(f([1, 2]), [z for z in range(3) if (w := z) > 0], w)"],
    "nested scopes": ["def outer():\n    k = 1\n    class Inner:\n        v = k\n        def m(self):\n"
                      "            return k + helper()\n    return Inner\n\ndef helper():\n    return 2\n\nprint(outer()().m())"],
    "global and nonlocal": ["count = 0\ndef bump():\n    global count\n    count += 1\n\ndef make():\n    n = 0\n"
                            "    def inc():\n        nonlocal n\n        n += 1\n        return n\n    return inc\n\nbump()\n"
                            "print(count, make()())"],
    "dataclass and annotations": ["from dataclasses import dataclass, field\n\n@dataclass\nclass Config:\n"
                                  "    lr: float = 0.1\n    tags: list = field(default_factory=list)\n\n"
                                  "cfg = Config()\ncfg.tags.append('a')\nprint(cfg)"],
    "source as a list of lines": None,  # built below from raw JSON
    "train line with expressions": [IMPORTS, NET, LOADER, "# parameters\nlr = 0.1\nepochs = 2",
                                    "%%train --name run-{lr}-$$x --max-epochs {epochs * 2}\nmodel = Net(lr=lr)"],
    "multi-line string in the train body": [IMPORTS, NET, LOADER,
                                           '%%train\nnote = """line one\nline two"""\nprint(note)\nmodel = Net()'],
    "syntax error": ["def f(:\n    pass"],
    "unknown %%train option": [IMPORTS, NET, LOADER, "%%train --epochs 3\nmodel = Net()"],
    "undefined name": ["print(never_defined)"],
    "get_ipython by hand": ["ip = get_ipython()\nprint(ip)"],
    "display": ["x = 1\ndisplay(x)"],
}


def _corpus() -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    for name, cells in GENERATED.items():
        if cells is None:
            raw = {"nbformat": 4, "nbformat_minor": 4, "metadata": {},
                   "cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                              "source": ["import json\n", "print(json.dumps({'a': 1}))\n"]}]}
            items.append((name, raw))
        else:
            items.append((name, notebook(*cells)))
    items.append(("generated 60 cells", _bench().generated_notebook(60)))
    for path in sorted(Path(sys.prefix).rglob("*.ipynb"))[:40]:
        items.append((f"installed: {path.parent.name}/{path.name}", path))
    return items


def _bench():
    """scripts/bench_export.py as a module (its notebook generator feeds the corpus)."""
    spec = importlib.util.spec_from_file_location("bench_export", ROOT / "scripts" / "bench_export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CORPUS = _corpus()


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 20


@pytest.mark.parametrize("item", CORPUS, ids=[name for name, _ in CORPUS])
def test_robustness_corpus_compiles_or_fails_clearly(item, tmp_path):
    _, nb = item
    try:
        result = export_notebook(nb, tmp_path / "out.py")
    except LabError as err:
        assert str(err).strip() and "\n" not in str(err)
        assert not (tmp_path / "out.py").exists()
        return
    compile(result.script, "out.py", "exec")
    py_compile.compile(str(tmp_path / "out.py"), doraise=True)


# ---- the round trip ------------------------------------------------------------------------------------------

MESSY = {
    "messy_datamodule": notebook(
        "# md # A messy notebook\nImports spread over cells, redefinitions, plots, shell lines.",
        "%load_ext lightning_lab\n%matplotlib inline",
        "# parameters\nmax_epochs = 6\nlr = 0.05\nhidden = 16\nbatch_size = 32",
        "import numpy as np\nimport torch",
        "!pip --version\nimport matplotlib.pyplot as plt",
        "from torch import nn\nimport torch.nn.functional as F\nfrom torch.utils.data import DataLoader, TensorDataset\n"
        "from lightning_lab import LabDataModule, LabModule",
        "N_FEATURES = 8\n\n\ndef make_data(n, dim=N_FEATURES, seed=0):\n    g = torch.Generator().manual_seed(seed)\n"
        "    x = torch.randn(n, dim, generator=g)\n    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()\n    return x, y",
        "%time X, Y = make_data(512)",
        "plt.scatter(X[:, 0].numpy(), X[:, 1].numpy(), c=Y.numpy())\nplt.title('data')\nplt.show()",
        "X.shape",
        "X[:, 1] *= 2.0  # rescale one feature",
        "class ToyData(LabDataModule):  # a first try, redefined below\n    pass",
        "import functools\n\n\ndef logged(fn):\n    @functools.wraps(fn)\n    def wrapper(*args, **kwargs):\n"
        "        return fn(*args, **kwargs)\n\n    return wrapper",
        "def split(x, y, frac=0.75):\n    n = int(len(x) * frac)\n    return (x[:n], y[:n]), (x[n:], y[n:])",
        "class ToyData(LabDataModule):\n    def __init__(self, batch_size=64):\n        super().__init__()\n"
        "        self.batch_size = batch_size\n\n    def setup(self, stage=None):\n"
        "        (self.xt, self.yt), (self.xv, self.yv) = split(X, Y)\n\n    def train_dataloader(self):\n"
        "        return DataLoader(TensorDataset(self.xt, self.yt), batch_size=self.batch_size, shuffle=True)\n\n"
        "    def val_dataloader(self):\n        return DataLoader(TensorDataset(self.xv, self.yv), batch_size=128)",
        "class Net(LabModule):\n    def __init__(self, hidden=32, lr=0.1, momentum=0.0):\n        super().__init__()\n"
        "        self.save_hyperparameters()\n"
        "        self.body = nn.Sequential(nn.Linear(N_FEATURES, hidden), nn.Tanh(), nn.Linear(hidden, 2))\n\n"
        "    @logged\n    def forward(self, x):\n        return self.body(x)\n\n"
        "    def training_step(self, batch, batch_idx):\n        x, y = batch\n"
        "        loss = F.cross_entropy(self(x), y)\n        self.log('train_loss', loss)\n        return loss\n\n"
        "    def validation_step(self, batch, batch_idx):\n        x, y = batch\n        logits = self(x)\n"
        "        self.log('val_loss', F.cross_entropy(logits, y))\n"
        "        self.log('val_acc', (logits.argmax(-1) == y).float().mean())\n\n"
        "    def configure_optimizers(self):\n"
        "        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)",
        "np.set_printoptions(precision=3)\nprint(np.round(X[:3].numpy(), 3))",
        "%%train --max-epochs $max_epochs --seed 0 --name messy\ndm = ToyData(batch_size=batch_size)\n"
        "model = Net(hidden=hidden, lr=lr, momentum=0.9)",
        "print(_run.final)",
    ),
    "messy_loaders": notebook(
        "%load_ext lightning_lab",
        "# parameters\nmax_epochs = 6\nseed = 3",
        "import random\n\nimport torch\n\ntorch.manual_seed(1)  # the data below uses the global generator\n"
        "random.seed(2)",
        "files = !ls\nprint(len(files))\n%who",
        "features = torch.randn(300, 4)\ntargets = (features.sum(1) > 0).long()",
        "features[:3]",
        "def standardize(t):\n    t.sub_(t.mean(0)).div_(t.std(0))\n\n\nstandardize(features)",
        "%%time\nfrom torch.utils.data import DataLoader, TensorDataset\n\nimport torch.nn.functional as F\n"
        "from lightning_lab import LabModule\n\nds = TensorDataset(features, targets)",
        "class Linear(LabModule):\n    def __init__(self, lr=0.1, bias=True):\n        super().__init__()\n"
        "        self.save_hyperparameters()\n        self.fc = torch.nn.Linear(4, 2, bias=bias)\n\n"
        "    def training_step(self, batch, batch_idx):\n        x, y = batch\n"
        "        loss = F.cross_entropy(self.fc(x), y)\n        self.log('train_loss', loss)\n        return loss\n\n"
        "    def validation_step(self, batch, batch_idx):\n        x, y = batch\n"
        "        self.log('val_loss', F.cross_entropy(self.fc(x), y))\n\n"
        "    def configure_optimizers(self):\n        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)",
        "%%train --model net --data train_dl --val valid_dl --seed {seed} --max-epochs $max_epochs --name loaders\n"
        "net = Linear(lr=0.2, bias=True)\ntrain_dl = DataLoader(ds, batch_size=50, shuffle=True)\n"
        "valid_dl = DataLoader(ds, batch_size=100)",
        "print(_run.path)",
    ),
}


def _override_parameters(nb: nbformat.NotebookNode, **values: object) -> None:
    """papermill-style: the new values are appended to the parameters-tagged cell."""
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n# injected\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items())


def _final(root: Path) -> dict[str, float]:
    runs = list_runs(root)
    assert len(runs) == 1 and runs[0].status == "completed", [(r.name, r.status) for r in runs]
    return runs[0].final


@pytest.mark.parametrize("name", [*sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")), *MESSY])
def test_round_trip_notebook_and_script_log_the_same_metrics(name, tmp_path, monkeypatch):
    """Run the notebook (a real kernel, papermill-style parameters), export it, run the script with plain
    python in a fresh process with the same options: the final logged metrics agree within 1e-6."""
    epochs = 2
    source = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(source, as_version=4) if source.exists() else nbformat.from_dict(MESSY[name])
    _override_parameters(nb, max_epochs=epochs)
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, path)

    monkeypatch.setenv("LIGHTNING_LAB_ROOT", str(tmp_path / "notebook_runs"))
    monkeypatch.setenv("LIGHTNING_LAB_NO_WIDGET", "1")
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    result = export_notebook(path, tmp_path / "train.py")
    env = {**os.environ, "LIGHTNING_LAB_ROOT": str(tmp_path / "script_runs")}
    options = ["--max-epochs", str(epochs)] if result.train_cell else []  # no %%train cell: no CLI
    run = subprocess.run([sys.executable, "train.py", *options], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]

    in_notebook, in_script = _final(tmp_path / "notebook_runs"), _final(tmp_path / "script_runs")
    assert in_notebook.keys() == in_script.keys() and in_notebook
    for metric, value in in_notebook.items():
        assert in_script[metric] == pytest.approx(value, abs=1e-6), metric
    if name == "01_quickstart":
        help_ = subprocess.run([sys.executable, "train.py", "--help"], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=120)
        assert help_.returncode == 0
        for flag in ("--max-epochs", "--seed", "--name", "--hidden", "--lr"):
            assert flag in help_.stdout
    if name == "messy_loaders":
        assert {o.flag for o in result.hyperparameters} == {"--lr", "--bias", "--batch-size", "--shuffle",
                                                            "--valid-dl-batch-size"}
