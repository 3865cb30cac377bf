# Every target works on a fresh machine with only python3 and the package index:
# the virtualenv is created and filled on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: test lint typecheck unit demo bench clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

test: lint typecheck unit

lint: $(INSTALLED)
	$(BIN)/ruff check binif tests benchmarks examples
	$(BIN)/ruff format --check binif tests benchmarks examples

typecheck: $(INSTALLED)
	$(BIN)/mypy --strict binif

unit: $(INSTALLED)
	$(BIN)/python -m pytest -q

demo: $(INSTALLED)
	$(BIN)/python examples/codec_tour.py

bench: $(INSTALLED)
	$(BIN)/python benchmarks/bench_codec.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis build *.egg-info
