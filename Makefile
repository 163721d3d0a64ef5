# calc-mq: one entry point for the usual chores. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: help venv proto proto-check lint test test-fast demo bench broker clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the pinned packages

proto: $(STAMP)  ## regenerate calcmq/proto from protos/ (the one command)
	$(PY) scripts/gen_proto.py

proto-check: $(STAMP)  ## fail if the generated stubs drifted from protos/
	$(PY) scripts/gen_proto.py --check

lint: $(STAMP)  ## ruff and mypy
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: $(STAMP)  ## the whole suite (makes sure a broker runs first)
	scripts/ensure_broker.sh
	$(PY) -m pytest

demo: $(STAMP)  ## start the five programs, run the client demo, stop them
	scripts/ensure_broker.sh
	$(PY) scripts/demo.py

bench: $(STAMP)  ## run the benchmark (bench/run.py; ARGS=--quick for a 60 s smoke run)
	scripts/ensure_broker.sh
	$(PY) bench/run.py $(ARGS)

broker:  ## make sure a RabbitMQ broker answers at RABBITMQ_URL
	scripts/ensure_broker.sh

clean:  ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
