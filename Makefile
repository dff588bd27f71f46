# mbc: `make test` sets everything up and runs the whole suite; see README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The stamps name a hash of what they were made from, not a time: a fresh clone (new file
# times) reuses a cached venv or wheelhouse; a changed pyproject.toml makes a new stamp.
VENV_STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
SAMPLE ?= work-demo
PROXY := .cache/npm/node_modules/.bin/configurable-http-proxy
# apt-get as root, else through sudo
APT := $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: venv test lint sample-store bench clean proxy browser demo dicom-tools
.PHONY: docker-engine wheelhouse base-image images local-images
.PHONY: ansible-venv ansible-host-image test-ansible ansible-ready ansible-checks

# The package itself is (re)linked on every run: a cached venv may have served another clone.
venv: $(VENV_STAMP)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .

# torch is installed first and pinned (the CPU wheel on disk), so no dependency can pull a
# CUDA build of several GB into the environment.
$(VENV_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[ml,lab,test,hub]" torch==2.13.0
	rm -f $(VENV)/.installed-* && touch $@

lint: venv
	$(BIN)/ruff check mbc_lib tests benchmarks hub
	$(BIN)/ruff format --check mbc_lib tests benchmarks hub

# The hub tests drive a real Docker engine with the local images (built once, then cached).
# The suite runs in three pytest processes and the Ansible checks, packed onto the CPUs:
# - the notebook execution tests (tests/test_notebooks.py: training, pure CPU, no engine) start
#   first and run beside everything else;
# - beside them, the tests that start containers on the Docker engine (marker `docker`), which
#   mostly wait on their containers;
# - then the rest of pytest with the Ansible checks (Molecule) beside it. The Docker tests wait on
#   their containers' starts with deadlines, so they do not share the engine with Molecule, which
#   loads gigabytes of images into its hosts; Molecule mostly waits on its hosts' engines.
# The notebooks' and the Ansible checks' output is kept in .cache/ and printed once the rest is
# done; any part failing fails `make test`. MBC_TEST_SERIAL=1 runs them one after the other.
# (PYTEST is expanded where it is used: the image names are defined further down.)
# OMP_WAIT_POLICY=PASSIVE: torch's OpenMP threads sleep instead of spinning while they wait, so
# a training test loses little to the other processes (the results do not change: the tests fix
# torch's thread count).
PYTEST = MBC_TEST_IMAGE=$(LOCAL_RESEARCHER) MBC_TEST_HUB_IMAGE=$(LOCAL_HUB) OMP_WAIT_POLICY=PASSIVE \
	$(BIN)/pytest -q --durations=10
NOTEBOOK_TESTS := tests/test_notebooks.py
NOTEBOOK_LOG := .cache/test-notebooks.log
ANSIBLE_LOG := .cache/test-ansible.log
test: venv lint proxy browser dicom-tools docker-engine local-images ansible-ready
	@mkdir -p .cache; \
	  if [ -n "$(MBC_TEST_SERIAL)" ]; then \
	    $(PYTEST) -m docker; hub=$$?; \
	    $(PYTEST) -m 'not docker'; rest=$$?; notebooks=0; \
	    $(MAKE) --no-print-directory ansible-checks 2>&1 | tee $(ANSIBLE_LOG); checks=$${PIPESTATUS[0]}; \
	  else \
	    echo "notebook tests started beside the others (log: $(NOTEBOOK_LOG))"; \
	    $(PYTEST) -p no:cacheprovider -m 'not docker' $(NOTEBOOK_TESTS) >$(NOTEBOOK_LOG) 2>&1 & nbs=$$!; \
	    $(PYTEST) -m docker; hub=$$?; \
	    echo "ansible checks started beside pytest (log: $(ANSIBLE_LOG))"; \
	    $(MAKE) --no-print-directory ansible-checks >$(ANSIBLE_LOG) 2>&1 & ansible=$$!; \
	    $(PYTEST) -m 'not docker' --ignore=$(NOTEBOOK_TESTS); rest=$$?; \
	    wait $$nbs; notebooks=$$?; \
	    echo "== notebook tests ($(NOTEBOOK_LOG))"; cat $(NOTEBOOK_LOG); \
	    wait $$ansible; checks=$$?; \
	    echo "== ansible checks ($(ANSIBLE_LOG))"; cat $(ANSIBLE_LOG); \
	  fi; \
	  [ $$hub -eq 0 ] || echo "make test: the Docker tests failed (pytest exit $$hub)" >&2; \
	  [ $$rest -eq 0 ] || echo "make test: the other tests failed (pytest exit $$rest)" >&2; \
	  [ $$notebooks -eq 0 ] || echo "make test: the notebook tests failed (pytest exit $$notebooks)" >&2; \
	  [ $$checks -eq 0 ] || echo "make test: the ansible checks failed (exit $$checks)" >&2; \
	  [ $$hub -eq 0 ] && [ $$rest -eq 0 ] && [ $$notebooks -eq 0 ] && [ $$checks -eq 0 ]

# The hub's proxy, installed into the project (never globally).
proxy: $(PROXY)
$(PROXY):
	@command -v npm >/dev/null || { $(APT) update -qq && $(APT) install -y -qq nodejs npm; }
	npm install --prefix .cache/npm --no-audit --no-fund --loglevel=error configurable-http-proxy@4.6.3

# Debian's Chromium and chromedriver for the browser test; nothing to do where both are there.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  $(APT) update -qq && $(APT) install -y -qq chromium chromium-driver; fi

# Real DICOM peers for the ingest service's tests: Debian's dcmtk (storescu) and Orthanc with
# its DICOMweb plugin (a society's PACS); dicom3tools' dciodvfy checks exported DICOM-SEG.
# Installed without starting Orthanc's system service (policy-rc.d answers 101 during the
# install): the tests start their own, on loopback.
dicom-tools:
	@if ! dpkg -s dcmtk orthanc orthanc-dicomweb dicom3tools >/dev/null 2>&1; then \
	  policy=/usr/sbin/policy-rc.d; made=; \
	  if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee $$policy >/dev/null \
	    && $(SUDO) chmod +x $$policy && made=1; fi; \
	  $(APT) update -qq && $(APT) install -y -qq dcmtk orthanc orthanc-dicomweb dicom3tools; rc=$$?; \
	  [ -n "$$made" ] && $(SUDO) rm -f $$policy; exit $$rc; \
	fi

# The README's main command: sample store (built once), then the hub on 127.0.0.1:8000 with
# the local spawner and demo logins; prints the URL and the logins. Ctrl-C stops it.
# MBC_SPAWNER=docker make demo: the same with a container per researcher (the local images).
MBC_SPAWNER ?= local
demo: venv proxy $(if $(filter docker,$(MBC_SPAWNER)),docker-engine local-images)
	$(if $(filter docker,$(MBC_SPAWNER)),MBC_IMAGE=$(LOCAL_RESEARCHER)) \
	  $(BIN)/mbc demo --workdir $(SAMPLE) --spawner $(MBC_SPAWNER)

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

# ---- container images (images/, docs/images.md) -----------------------------------------------
# `make images`: mbc-base:bookworm (debootstrap, no registry), mbc-researcher:latest, mbc-hub:latest.
# The researcher image is built FROM the Jupyter Docker Stacks CUDA PyTorch image, or, in CI or
# with IMAGES_OFFLINE=1, FROM mbc-base:bookworm with CPU torch, offline from the wheelhouse.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
WHEELHOUSE ?= .cache/wheelhouse
IMAGES_OFFLINE ?= $(if $(CI),1,)
RESEARCHER_BASE ?= $(if $(IMAGES_OFFLINE),mbc-base:bookworm,quay.io/jupyter/pytorch-notebook:cuda12-latest)

# A Docker engine that answers: Debian's docker.io where dockerd is missing, dockerd started in
# the background (log: .cache/dockerd.log) where it is installed but not running. In CI (or with
# GPU_STAND_IN=1), on a machine without the NVIDIA Container Toolkit, dockerd gets the stand-in
# hook of tests/hub/gpu-stand-in/ at the END of its PATH: its "nvidia" device driver then applies
# DeviceRequests for real (NVIDIA_VISIBLE_DEVICES), so the GPU path is tested without a GPU.
GPU_STAND_IN ?= $(if $(CI),1,)
STAND_IN_DIR := $(HOME)/.cache/mbc-gpu-stand-in
docker-engine:
	@command -v dockerd >/dev/null || { $(APT) update -qq && $(APT) install -y -qq docker.io; }
	@if ! docker info >/dev/null 2>&1; then \
	  path="$$PATH"; \
	  if [ -n "$(GPU_STAND_IN)" ] && ! command -v nvidia-container-runtime-hook >/dev/null; then \
	    mkdir -p $(STAND_IN_DIR) && cp tests/hub/gpu-stand-in/nvidia-container-runtime-hook $(STAND_IN_DIR)/ \
	    && path="$$PATH:$(STAND_IN_DIR)"; echo "dockerd with the GPU stand-in hook ($(STAND_IN_DIR))"; \
	  fi; \
	  mkdir -p .cache; echo "starting dockerd (log: .cache/dockerd.log)"; \
	  PATH="$$path" $(SUDO) env PATH="$$path" DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid nohup dockerd >.cache/dockerd.log 2>&1 </dev/null & \
	  for i in $$(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done; \
	  docker info >/dev/null 2>&1 || { echo "dockerd does not answer: see .cache/dockerd.log" >&2; exit 1; }; \
	fi

# Every wheel the images install (resolved by this machine's pip and its config), the mbc wheel
# and configurable-http-proxy; carry $(WHEELHOUSE) to an air-gapped site.
WHEELHOUSE_STAMP := $(WHEELHOUSE)/.done-$(shell cat pyproject.toml images/build.sh images/researcher/requirements.txt images/hub/requirements.txt | sha256sum | cut -c1-12)
wheelhouse: $(WHEELHOUSE_STAMP)
$(WHEELHOUSE_STAMP): | $(VENV_STAMP)
	MBC_PIP="$(BIN)/python -m pip" images/build.sh wheelhouse $(WHEELHOUSE)
	rm -f $(WHEELHOUSE)/.done-* && touch $@

# mbc-base:bookworm and mbc-base:bookworm-node; root only; skipped while images/base/build.sh is unchanged.
base-image: docker-engine
	@command -v debootstrap >/dev/null || { $(APT) update -qq && $(APT) install -y -qq debootstrap; }
	$(SUDO) images/base/build.sh

images: docker-engine base-image wheelhouse
	MBC_PIP="$(BIN)/python -m pip" MBC_RESEARCHER_BASE=$(RESEARCHER_BASE) \
	  $(if $(filter mbc-base%,$(RESEARCHER_BASE)),MBC_WHEELHOUSE=$(WHEELHOUSE)) images/build.sh researcher
	MBC_PIP="$(BIN)/python -m pip" MBC_WHEELHOUSE=$(WHEELHOUSE) images/build.sh hub
	@docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^mbc-(base|researcher|hub):(bookworm|latest)'

# The local images: researcher FROM mbc-base:bookworm with CPU torch, built offline from the
# wheelhouse, and the hub; no registry needed. The tests and `MBC_SPAWNER=docker make demo` use
# them; production tags (make images) are left alone.
LOCAL_RESEARCHER := mbc-researcher:local
LOCAL_HUB := mbc-hub:local
local-images: docker-engine base-image wheelhouse
	MBC_PIP="$(BIN)/python -m pip" MBC_RESEARCHER_BASE=mbc-base:bookworm \
	  MBC_WHEELHOUSE=$(WHEELHOUSE) MBC_RESEARCHER_TAG=$(LOCAL_RESEARCHER) images/build.sh researcher
	MBC_PIP="$(BIN)/python -m pip" MBC_WHEELHOUSE=$(WHEELHOUSE) MBC_HUB_TAG=$(LOCAL_HUB) \
	  images/build.sh hub
	@# the builds these tags replaced (untagged now): gigabytes a build, of mbc's images only
	@docker image prune -f --filter label=org.opencontainers.image.title=mbc-researcher >/dev/null
	@docker image prune -f --filter label=org.opencontainers.image.title=mbc-hub >/dev/null

# ---- Ansible (ansible/, docs/admin.md) ---------------------------------------------------------
# Its own venv (the ansible distribution, ansible-lint, Molecule), kept apart from the project's,
# cached in the user's cache and rebuilt when ansible/requirements.txt changes.
ANSIBLE_REQS_HASH := $(shell sha256sum ansible/requirements.txt | cut -c1-12)
ANSIBLE_VENV ?= $(HOME)/.cache/mbc-ci/ansible-$(ANSIBLE_REQS_HASH)
ansible-venv: $(ANSIBLE_VENV)/.installed
$(ANSIBLE_VENV)/.installed:  # its path names ansible/requirements.txt's hash
	$(PYTHON) -m venv $(ANSIBLE_VENV)
	$(ANSIBLE_VENV)/bin/pip install --quiet --upgrade pip
	$(ANSIBLE_VENV)/bin/pip install --quiet -r ansible/requirements.txt
	touch $@

# Molecule's hosts: Debian 12 with systemd, FROM the debootstrap base (no registry).
ansible-host-image: docker-engine base-image
	docker build --quiet --build-arg BASE_IMAGE=mbc-base:bookworm -t mbc-ansible-host:bookworm images/ansible-host

# Syntax, ansible-lint's production profile, then Molecule: converge, converge again with no
# change (idempotence), verify from outside, destroy. `ansible-ready` makes what they need;
# `ansible-checks` runs them with nothing to make (`make test` runs it beside pytest).
ansible-ready: venv ansible-venv ansible-host-image local-images wheelhouse
test-ansible: ansible-ready
	$(MAKE) --no-print-directory ansible-checks
ansible-checks:
	cd ansible && PATH="$(ANSIBLE_VENV)/bin:$$PATH" ansible-playbook --syntax-check site.yml
	cd ansible && PATH="$(ANSIBLE_VENV)/bin:$$PATH" ansible-lint --offline --profile production
	cd ansible && PATH="$(ANSIBLE_VENV)/bin:$$PATH" MBC_PYTHON="$(abspath $(BIN))/python" \
	  MBC_WHEELHOUSE="$(abspath $(WHEELHOUSE))" molecule test
