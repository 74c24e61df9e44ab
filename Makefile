# The two entry points: `make demo` (the whole chain on embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
export LOGLOOP_HOME ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(LOGLOOP_HOME)/dagster_home

.PHONY: install test demo dev clean-data

install: $(STAMP)

# torch==2.13.0 is pinned in pyproject.toml; on these machines pip takes the CPU
# build lying on disk. With a GPU, install a CUDA build of torch 2.13.0 first (docs/deployment/gpu.md).
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/pytest -q

demo: $(STAMP)
	$(VENV)/bin/python scripts/demo.py

# The Dagster UI and daemon on http://127.0.0.1:$(PORT) (`make dev PORT=3001` for another port).
PORT ?= 3000

dev: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || cp deploy/dagster.local.yaml $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -p $(PORT)

clean-data:
	rm -rf $(LOGLOOP_HOME)
