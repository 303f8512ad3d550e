# The two commands the README promises: `make demo` and `make test`. Everything else supports them.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.stamp-deps

.PHONY: all venv demo test lint typecheck unit bench-media clean

all: test

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when pyproject.toml changes, so a warm machine starts fast.
$(STAMP): pyproject.toml | $(BIN)/python
	@echo ">> installing the connector and dev tools into $(VENV)"
	$(BIN)/pip install --quiet --progress-bar off -e '.[dev,storage]'
	@touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check avc engines banking tests deploy
	$(BIN)/ruff format --check avc engines banking tests deploy

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench-media: $(STAMP)
	$(BIN)/python -m tests.bench.bench_media

demo: $(STAMP)
	$(BIN)/python -m avc.demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
