# retune: the two commands a new user runs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=
# The locks pin every distribution, with hashes, for CPython 3.11 on linux x86_64 (what the
# images run): requirements.lock what retune needs at run time (the operator image installs
# it), requirements-dev.lock that plus the dev extra, at the same versions.
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
LOCK_ARGS ?=
UV_COMPILE = $(VENV)/bin/uv pip compile pyproject.toml --quiet --generate-hashes \
	--python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	--custom-compile-command 'make lock' $(LOCK_ARGS)

.PHONY: demo demo-cluster test test-fast test-cluster test-e2e lint bootstrap lock testbin prometheus node browser images crd clean

# The venv gets exactly the locked versions, then retune itself (editable) without
# resolving anything again.
$(INSTALLED): pyproject.toml $(DEV_LOCK)
	@test -n "$(PYTHON)" || { echo "retune needs Python >= 3.11 (none found on PATH)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes --requirement $(DEV_LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

bootstrap: $(INSTALLED)

## lock: recompile the locks from pyproject.toml, keeping every pin that still fits
## (`make lock LOCK_ARGS=--upgrade` moves everything to the newest versions that fit)
lock: $(INSTALLED)
	$(UV_COMPILE) --output-file $(LOCK)
	$(UV_COMPILE) --extra dev --constraint $(LOCK) --output-file $(DEV_LOCK)

## demo: tune the bundled cache-eviction example locally (no cluster, no LLM)
demo: $(INSTALLED)
	@rm -rf runs/demo
	$(VENV)/bin/retune run examples/01-cache-eviction/target.yaml --output runs/demo

## demo-cluster: the continuous-tuning story on the test control plane, told as a timeline
demo-cluster: $(INSTALLED) testbin prometheus node images
	$(PY) -m tests.e2e.demo_cluster

## lint: ruff, formatting, mypy and the layer contract
lint: $(INSTALLED)
	$(VENV)/bin/ruff check operator tests bench examples
	$(VENV)/bin/ruff format --check operator tests bench examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## testbin: build the Kubernetes control plane and helm from Go modules (cached)
testbin:
	tests/cluster/build-binaries

## prometheus: install Debian's prometheus when missing (needs root)
prometheus:
	tests/cluster/install-prometheus

## node: install the real test node's Debian packages when missing (containerd, runc, CNI; needs root)
node:
	tests/cluster/install-node

## browser: install Debian's chromium and lua5.1 when missing, for the report's browser test and the Argo CD health check's (needs root)
browser:
	tests/install-browser >/dev/null

## images: build the operator, evaluator, cache workload and pause images with buildah
## (no Docker engine, no registry; cached by content; archives and manifest.json under
## $RETUNE_IMAGE_CACHE, default ~/.cache/retune-images; needs root)
images:
	images/build

## test: everything — lint, unit tests, real control plane and Prometheus tests
test: $(INSTALLED) testbin prometheus node browser images lint
	$(PY) -m pytest $(PYTEST_ARGS)

## test-fast: the unit tests in parallel, without the slow ones (no control plane, no
## Prometheus, no images); `make test` runs those too, one at a time
test-fast: $(INSTALLED)
	$(PY) -m pytest -m "not slow and not cluster and not prometheus and not e2e and not images" \
		-n auto --dist loadfile $(PYTEST_ARGS)

## test-cluster: only the tests that need the control plane
test-cluster: $(INSTALLED) testbin prometheus node
	$(PY) -m pytest -m "cluster or prometheus" $(PYTEST_ARGS)

## test-e2e: the operator end to end on the control plane
test-e2e: $(INSTALLED) testbin prometheus node
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

## crd: regenerate crds/ from the models
crd: $(INSTALLED)
	$(VENV)/bin/retune crd > crds/optimizationtarget.yaml
	cp crds/optimizationtarget.yaml charts/retune/crds/optimizationtarget.yaml

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
