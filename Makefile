# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
# Both create the virtual environment in .venv on first use. torch is pinned to 2.13.0 (a CPU build
# here): an unpinned torch would resolve to a multi-GB CUDA build.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lightning-lab-installed

.PHONY: install browser-deps demo test lint bench clean extension extension-check

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

# The JupyterLab plugin. Users never need Node: the built bundle (lightning_lab/labextension/) is committed
# and `pip install -e .` / the wheel install it with the server extension's config (pyproject's shared-data).
# `make extension` rebuilds it from extension/ (Node 20+, packages from the npm registry via the lock file)
# and reinstalls the package so the environment serves the new bundle; `make extension-check` only
# type-checks the TypeScript (tsc, strict).
extension: install
	$(PY) -m pip install -q -e ".[extension]"
	cd extension && npm ci --no-audit --no-fund && PATH="$(abspath $(VENV))/bin:$$PATH" npm run build
	$(PY) -m pip install -q --no-deps -e .

extension-check:
	cd extension && npm ci --no-audit --no-fund && npx tsc --noEmit

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
