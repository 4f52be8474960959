# Set-up is two commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test test-fast demo server bench clean

# `.[dev]` pins torch==2.14.1 / torchvision==0.29.1 (the library itself only asks for ranges), so a
# fresh clone installs exactly the pair the suite was measured with, never a gigabytes-large other one.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)          ## the whole suite, slow tests included (what CI runs)
	$(PY) -m pytest -q

test-fast: $(STAMP)     ## skip tests marked slow
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)          ## generate the composite dataset, run the pipeline, compare, classify
	$(VENV)/bin/videoseq demo

server: $(STAMP)        ## a local Prefect server for scheduled deployments (videoseq serve)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/prefect server start --host 127.0.0.1

bench: $(STAMP)         ## speed and memory targets; figures go to docs/benchmarks.md
	$(PY) benchmarks/extract.py
	$(PY) benchmarks/generate.py
	$(PY) benchmarks/train.py
	$(PY) benchmarks/classify.py

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
