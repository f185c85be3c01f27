# The two commands of the README: `make demo` (the guard in a real call path) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bootstrap lint lab-up lab-down bench images test-containers

bootstrap:
	@scripts/bootstrap

demo: bootstrap
	@scripts/demo

test: bootstrap
	@scripts/test

lint: bootstrap
	$(VENV)/bin/ruff check npv_guard tests bench scripts/demo.py
	$(VENV)/bin/ruff format --check npv_guard tests bench scripts/demo.py
	$(VENV)/bin/mypy npv_guard

# How many calls per second one guard handles: table + bench/results/latest.json.
# BENCH_ARGS="--quick" for a short run, "--only core,redis,import" to select parts.
bench: bootstrap
	$(PY) -m bench.run $(BENCH_ARGS)

lab-up: bootstrap
	@scripts/lab up

lab-down:
	@scripts/lab down

# Container images with podman (docker/; local bases from debootstrap, see docker/README.md).
images:
	@scripts/container-images build

# Only the container test: both images, the compose stack under podman-compose, real SIP calls.
test-containers: bootstrap
	$(PY) -m pytest -m containers tests/docker
