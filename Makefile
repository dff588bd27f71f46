# mbc: `make test` sets everything up and runs the whole suite; see README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLE ?= work-demo

.PHONY: venv test lint sample-store bench clean

# The package itself is (re)linked on every run: a cached venv may have served another clone.
venv: $(VENV)/.installed
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .

# torch is installed first and pinned (the CPU wheel on disk), so no dependency can pull a
# CUDA build of several GB into the environment.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]" torch==2.13.0
	touch $@

lint: venv
	$(BIN)/ruff check mbc_lib tests benchmarks
	$(BIN)/ruff format --check mbc_lib tests benchmarks

test: venv lint
	$(BIN)/pytest -q

# The quickstart: a sample input tree, de-identified at the "edge", ingested, verified.
sample-store: venv
	rm -rf $(SAMPLE)
	$(BIN)/mbc sample-data $(SAMPLE)/input
	$(BIN)/mbc keygen $(SAMPLE)/project.key
	$(BIN)/mbc deid $(SAMPLE)/input $(SAMPLE)/deid --key-file $(SAMPLE)/project.key
	$(BIN)/mbc ingest $(SAMPLE)/deid/fundus-glaucoma --store $(SAMPLE)/store --dataset fundus-glaucoma
	$(BIN)/mbc ingest $(SAMPLE)/deid/ct-covid --store $(SAMPLE)/store --dataset ct-covid
	$(BIN)/mbc ingest $(SAMPLE)/deid/dicom-real --store $(SAMPLE)/store --dataset dicom-reference
	$(BIN)/mbc verify $(SAMPLE)/store
	$(BIN)/mbc catalog $(SAMPLE)/store

bench: venv
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(SAMPLE) .pytest_cache
