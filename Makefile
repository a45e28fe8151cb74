# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench mutate

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeopt demo --out runs/demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/foundation.py

# Mutation testing of the core algorithm modules (issue 17): not part of `make test`. Writes
# benchmarks/results/mutation.json; mutmut works on a copy in mutants/ and never edits src/.
mutate: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[mutate]'
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/mutation.py
