# The two commands of the README: `make demo` (the guard in a real call path) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bootstrap lint lab-up lab-down

bootstrap:
	@scripts/bootstrap

demo: bootstrap
	@scripts/demo

test: bootstrap
	@scripts/test

lint: bootstrap
	$(VENV)/bin/ruff check npv_guard tests
	$(VENV)/bin/mypy npv_guard

lab-up: bootstrap
	@scripts/lab up

lab-down:
	@scripts/lab down
