# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
# Both create the virtual environment in .venv on first use. torch is pinned to 2.13.0 (a CPU build
# here): an unpinned torch would resolve to a multi-GB CUDA build.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lightning-lab-installed

.PHONY: install browser-deps demo test lint bench clean

install: $(STAMP)

# pip's output goes to .venv/install.log (shown only if the install fails).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (torch 2.13 CPU build, the package, its dev extra); log: $(VENV)/install.log"
	@( $(PY) -m pip install --upgrade pip \
	   && $(PY) -m pip install torch==2.13.0 \
	   && $(PY) -m pip install -e ".[dev]" ) > $(VENV)/install.log 2>&1 \
	   || { tail -n 40 $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

# Debian's Chromium (apt, needs root) and Playwright's driver, for tests/test_browser.py (skipped without them).
browser-deps: install
	scripts/install_browser.sh $(VENV)

demo: install
	$(VENV)/bin/lightning-lab demo --notebook notebooks/01_quickstart.ipynb

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check lightning_lab tests scripts

bench: install
	$(PY) scripts/bench_overhead.py

clean:
	rm -rf $(VENV) lab_runs .pytest_cache
