# Thin targets: each calls one Python entry point. PROFILE=cpu|gpu overrides GPU detection.
PY := .venv/bin/python
SYS_PY := $(shell command -v python3.11 || command -v python3)

.PHONY: setup up down status loadtest test lint serve-config

setup:
	@$(SYS_PY) -m stack.bootstrap

up: setup
	@$(PY) -m stack.cluster up

down:
	@if [ -x $(PY) ]; then $(PY) -m stack.cluster down; else echo "no .venv: nothing was started"; fi

status:
	@$(PY) -m stack.cluster status

loadtest: setup
	@$(PY) -m loadtests.quick

# Regenerate the committed Serve configs from stack/ops.yaml.
serve-config: setup
	@$(PY) -m stack.serve_config

lint: setup
	@$(PY) -m ruff check .

test: setup
	@$(PY) -m ruff check .
	@$(PY) -m pytest -ra $(PYTEST_ARGS)
