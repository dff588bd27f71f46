# mbc: `make test` sets everything up and runs the whole suite; see README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLE ?= work-demo
PROXY := .cache/npm/node_modules/.bin/configurable-http-proxy
# apt-get as root, else through sudo
APT := $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: venv test lint sample-store bench clean proxy browser demo

# The package itself is (re)linked on every run: a cached venv may have served another clone.
venv: $(VENV)/.installed
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .

# torch is installed first and pinned (the CPU wheel on disk), so no dependency can pull a
# CUDA build of several GB into the environment.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[ml,test,hub]" torch==2.13.0
	touch $@

lint: venv
	$(BIN)/ruff check mbc_lib tests benchmarks hub
	$(BIN)/ruff format --check mbc_lib tests benchmarks hub

test: venv lint proxy browser
	$(BIN)/pytest -q

# The hub's proxy, installed into the project (never globally).
proxy: $(PROXY)
$(PROXY):
	@command -v npm >/dev/null || { $(APT) update -qq && $(APT) install -y -qq nodejs npm; }
	npm install --prefix .cache/npm --no-audit --no-fund --loglevel=error configurable-http-proxy@4.6.3

# Debian's Chromium and chromedriver for the browser test; nothing to do where both are there.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  $(APT) update -qq && $(APT) install -y -qq chromium chromium-driver; fi

# The README's main command: sample store (built once), then the hub on 127.0.0.1:8000 with
# the local spawner and demo logins; prints the URL and the logins. Ctrl-C stops it.
demo: venv proxy
	$(BIN)/mbc demo --workdir $(SAMPLE)

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
