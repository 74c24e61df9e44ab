# The two entry points: `make demo` (the whole chain on embedded defaults) and `make test`.
# The interpreter the venv is made from: the distribution's own Python 3 where it is 3.10 or newer and can
# make a venv, else python3 from PATH (`make PYTHON=...` picks another; an existing .venv is kept).
# Distributions build their Python with profile-guided and link-time optimisation, as the image's
# (python:3.11-slim) is built; a plain source build, such as pyenv's default, runs the same Python code
# with about 15% more CPU, and the suite is CPU-bound (docs/benchmarks.md, "Which Python runs the suite").
SYSTEM_PYTHON := $(shell /usr/bin/python3 -c 'import sys, ensurepip, venv; print(sys.executable if sys.version_info >= (3, 10) else "")' 2>/dev/null)
PYTHON ?= $(or $(SYSTEM_PYTHON),python3)
VENV := .venv
STAMP := $(VENV)/.installed-stamp
export LOGLOOP_HOME ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(LOGLOOP_HOME)/dagster_home

.PHONY: install compile test demo dev clean-data

install: $(STAMP)

# Installs go through uv (pinned here), which resolves and links the pinned dependencies in
# seconds from its cache; pip is used once, to put uv itself into the venv. uv reads its own
# settings, so a wheel folder given to pip (PIP_FIND_LINKS) is handed on to it. The installed
# packages are compiled to bytecode once, here: where PYTHONDONTWRITEBYTECODE is set, Python would
# otherwise compile Dagster and torch from source again in every process (each CLI command, each
# run and step). With a GPU, install a CUDA build of torch 2.13.0 first (docs/deployment/gpu.md).
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
export UV_FIND_LINKS ?= $(PIP_FIND_LINKS)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(UV) --version 2>/dev/null | grep -qx 'uv $(UV_VERSION)' || $(VENV)/bin/pip install -q 'uv==$(UV_VERSION)'
	$(UV) pip install -q --compile-bytecode -p $(VENV)/bin/python -e '.[test]'
	touch $(STAMP)

# Tests run in parallel (pytest-xdist), one worker per core and two more: the long system tests
# spend part of their minutes waiting on a daemon, a browser or a server (the daemon tests wait for
# one-minute windows to close), and the extra workers use the CPU meanwhile. The suite is otherwise
# CPU-bound (on 2 cores, about 750 to 800 s of CPU), and tests/conftest.py gives each process one torch
# thread, since workers train side by side. Tests are handed out a module at a time (--dist loadfile),
# so that a module's fixtures (servers, trained models) are set up once, the longest first, the system
# tests on one worker per core and the rest on the others (tests/scheduling.py).
# TEST_WORKERS=0 runs everything in this process, one test after another. The 30 slowest tests are
# listed at the end, to keep an eye on.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 2 )))

# The project's own modules are compiled to bytecode first, for the same reason as the installed
# packages (the suite starts some 500 Python processes); stale files are recompiled, as Python would.
compile: $(STAMP)
	$(VENV)/bin/python -m compileall -q -j 0 orchestration ops resources scripts benchmarks tests > /dev/null

test: compile
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30

demo: compile
	$(VENV)/bin/python scripts/demo.py

# The Dagster UI and daemon on http://127.0.0.1:$(PORT) (`make dev PORT=3001` for another port).
PORT ?= 3000

dev: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || cp deploy/dagster.local.yaml $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -p $(PORT)

clean-data:
	rm -rf $(LOGLOOP_HOME)
