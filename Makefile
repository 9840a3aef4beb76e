# porelab: `make demo` runs the demo job, `make test` runs the test suite.
# Both create or reuse the project-local virtual environment .venv.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= ml,dev,slurm,blender

# Caches stay inside the repo's ignored .cache/, never the home directory.
export XDG_CACHE_HOME := $(CURDIR)/.cache/xdg
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export PORELAB_CACHE := $(CURDIR)/.cache
export DASK_TEMPORARY_DIRECTORY := $(CURDIR)/.cache/dask
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install demo test test-all bench clean schema

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/porelab run jobs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m "not gpu"

schema: $(STAMP)
	$(VENV)/bin/porelab schema --out schemas/job.schema.json
	$(VENV)/bin/porelab schema --model --out schemas/model.schema.json

bench: $(STAMP)
	for b in benchmarks/*.py; do [ $$b = benchmarks/gpu.py ] || $(PY) $$b || exit 1; done

bench-gpu: $(STAMP)
	$(PY) benchmarks/gpu.py

clean:
	rm -rf runs .cache .pytest_cache
