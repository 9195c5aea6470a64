# Quick start: `make run` (an offline campaign) and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Without a GPU, pin the CPU build of torch so the install is small and quick; with one, let pip
# pick the default (CUDA) build. Override with `make TORCH_SPEC='torch==X.Y' ...`.
TORCH_SPEC ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch>=2.2,torch==2.13.0)

.PHONY: run test test-slow bench venv clean chromium bubblewrap

venv: $(STAMP) bubblewrap

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev,ray]'
	@touch $(STAMP)

run: $(STAMP) bubblewrap
	$(PY) run_evolution.py

# Candidate programs run inside bubblewrap (docs/sandbox.md); a no-op when it is already installed.
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || \
	  $(if $(filter 0,$(shell id -u)),,sudo -n) sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null' || \
	  echo "bubblewrap could not be installed; evaluations will refuse to start until it is (see docs/sandbox.md)"

# Headless Chromium renders report.html in tests/test_report.py; a no-op when it is already installed.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  $(if $(filter 0,$(shell id -u)),,sudo -n) sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null' || \
	  echo "chromium could not be installed; tests/test_report.py will skip its browser check"

test: $(STAMP) bubblewrap chromium
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-slow: $(STAMP) bubblewrap
	$(PY) -m pytest -q -m slow

bench: $(STAMP) bubblewrap
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
