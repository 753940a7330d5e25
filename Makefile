# The README's two commands. Both set everything up on first use (a .venv with the package in it).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The demo installs what the demo needs; Spark, Jupyter and the test tools come with `make test`.
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m compileall -q skintrack  # as pip does for an installed package: no compiling at each start
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m compileall -q skintrack
	touch $@ $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/skintrack demo --study build/demo-study

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -n auto --dist loadfile skintrack tests

bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) build
