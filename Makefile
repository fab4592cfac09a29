# Every target creates .venv and installs the package (with its dev extras) when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: help install test demo notebooks bench lab clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install unetlib with its dev extras

test: $(STAMP)  ## lint and format check (ruff), then the whole test suite: unit tests and every notebook (nbval, fast profile)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest  # notebooks included: --nbval is in pyproject.toml

demo: $(STAMP)  ## the main job: check data, train quick (reused once done), run all notebooks, evaluate
	$(BIN)/unetlib check-data
	$(BIN)/unetlib train --preset quick --out runs/quick --reuse
	$(BIN)/jupyter nbconvert --to notebook --execute --output-dir runs/notebooks notebooks/0*.ipynb
	$(BIN)/unetlib evaluate runs/quick/model.keras --json runs/quick/test_scores.json

notebooks: $(STAMP)  ## re-run every notebook in place with the default profile, keeping real outputs (about 20 minutes)
	env -u UNETLIB_PROFILE $(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 notebooks/0*.ipynb
	$(BIN)/jupyter nbconvert --coalesce-streams notebooks/0*.ipynb  # progress bars: keep each one's final line
	$(BIN)/python scripts/compact_notebook_figures.py notebooks/0*.ipynb  # the same pixels in fewer bytes

bench: $(STAMP)  ## measure speed and memory on a full-size phantom (several minutes)
	$(BIN)/python -m benchmarks.bench --size full

lab: $(STAMP)  ## open JupyterLab on the notebooks
	$(BIN)/jupyter lab notebooks/

clean:  ## remove generated data, caches and runs (keeps .venv)
	rm -rf data/phantom data/.phantom.partial data/.phantom.old runs .pytest_cache
