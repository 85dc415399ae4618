# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
# Both create the virtual environment in .venv on first use (torch pinned to its CPU build).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lightning-lab-installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Pinned first: an unpinned torch resolves to a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/lightning-lab demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check lightning_lab tests scripts

bench: install
	$(PY) scripts/bench_overhead.py

clean:
	rm -rf $(VENV) lab_runs .pytest_cache
