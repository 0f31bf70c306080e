# fashion-bench: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines without a GPU: pin the CPU build of torch (see README "Install"). Set CONSTRAINTS= to lift it.
CONSTRAINTS ?= constraints-cpu.txt
PIP_CONSTRAINT_FLAG := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
PYTEST_ARGS ?=

.PHONY: help install test test-fast test-browser demo bench report clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

# uv, when on PATH, installs in seconds; it does not read pip's configuration (e.g. a local wheel folder for the
# CPU torch), so whatever it cannot resolve falls back to pip. UV= (empty) forces pip.
UV ?= $(shell command -v uv 2>/dev/null)
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(if $(UV),$(UV) pip install --quiet --python $(PY) $(PIP_CONSTRAINT_FLAG) -e '.[dev]' || )$(PY) -m pip install --quiet $(PIP_CONSTRAINT_FLAG) -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install fashion-bench with its dev tools

test: install  ## run the test suite
	$(PY) -m pytest $(PYTEST_ARGS)

BROWSER_PACKAGES := chromium chromium-driver
test-browser: install  ## the search page in headless Chromium (installs chromium, chromium-driver and selenium first)
	$(PY) -c 'import selenium' 2>/dev/null || $(PY) -m pip install --quiet $(PIP_CONSTRAINT_FLAG) -e '.[dev,browser]'
	@if command -v chromedriver >/dev/null && command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "make test-browser: chromium or chromedriver missing and not root: install the OS packages $(BROWSER_PACKAGES)" >&2; \
	else \
	  apt-get update -qq || echo "make test-browser: apt-get update FAILED (an apt source is missing or unreachable); trying the install with the package lists at hand" >&2; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES) >/dev/null \
	    || echo "make test-browser: apt-get install $(BROWSER_PACKAGES) FAILED: the browser test will say what is missing" >&2; \
	fi
	$(PY) -m pytest -m browser tests/serve/test_browser.py -rs $(PYTEST_ARGS)

demo: install  ## the main job: the whole synthetic benchmark on the `small` world, then the report
	$(PY) -m fashion_bench.demo

bench: install  ## benchmarks (ratios measured side by side in one run)
	$(PY) tests/bench/bench_metrics.py
	$(PY) tests/bench/bench_training.py
	$(PY) tests/bench/bench_text_trim.py
	$(PY) tests/bench/bench_clip4cir.py
	$(PY) tests/bench/bench_multiprompt.py
	$(PY) tests/bench/bench_enclip.py --members 5 --steps 8 --rounds 2 --diversity seed --text trained frozen --image-size 64 400
	$(PY) tests/bench/bench_fashionklip.py --steps 8 --rounds 2
	$(PY) tests/bench/bench_index.py  # BENCH_INDEX_N=100000 for a quick run
	$(PY) tests/bench/bench_serve.py

report: install  ## runs/ -> docs/leaderboard.md, plots, galleries, claims and the demo's regression check
	$(VENV)/bin/fashion-bench report --runs runs --out docs --check configs/report/expected.yaml --claims configs/report/claims.yaml

clean:  ## remove caches and build outputs (keeps runs/ and .venv)
	rm -rf .pytest_cache build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
