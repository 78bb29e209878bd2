# The two commands: `make run` (one nightly run on embedded defaults) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATE ?= 2025-04-12

.PHONY: run test test-fast lint system-tools bench java up down dashboards redis-stop clean constraints help

help:
	@echo "make run    - set up, run the DAG predictive_caching once for DATE=$(DATE), print a summary"
	@echo "make test   - set up, run the whole test suite"
	@echo "make lint   - ruff (lint and format) and mypy over the package, the DAGs and the Spark jobs; the import rules"
	@echo "make bench  - wall time per task of the default DAG run, then the delivery path's benchmarks"
	@echo "make up     - start Airflow (web UI), the edge services, the metrics bridge, Prometheus and the"
	@echo "              Pushgateway on 127.0.0.1 and print their URLs and the Airflow login"
	@echo "make down   - stop everything make up started"
	@echo "make dashboards - regenerate the Grafana dashboards in monitoring/grafana/dashboards"
	@echo "make redis-stop - stop the embedded redis-server started by make run"
	@echo "make clean  - remove generated data and the local Airflow home (keeps the venv)"

$(STAMP): requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else "Python 3.11+ is needed")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

java: $(STAMP)
	@$(BIN)/python -m edgecache.pipeline.java

run: java
	$(BIN)/edgecache run --date $(DATE)

# The Debian tools the tests need (.ci/system-packages): installed when run as root,
# else named with the apt-get line, before any test runs.
system-tools:
	@.ci/system-tools

test: java system-tools
	$(BIN)/python -m pytest

test-fast: java system-tools
	$(BIN)/python -m pytest -m "not e2e and not stack and not cluster"

# The code paths ruff and mypy check (mypy's list is in pyproject.toml).
LINTED := include dags spark_jobs tools

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: java
	$(BIN)/python bench/pipeline.py --date $(DATE)
	$(BIN)/python bench/delivery.py --date $(DATE)

up: java
	$(BIN)/edgecache up

down: $(STAMP)
	$(BIN)/edgecache down

dashboards: $(STAMP)
	$(BIN)/python -m edgecache.ops.dashboards

redis-stop: $(STAMP)
	$(BIN)/edgecache redis stop

constraints: $(STAMP)
	( echo "# Every package installed, at the version the tests ran with (regenerate: make constraints)."; \
	  $(BIN)/python -m pip freeze --exclude-editable ) > constraints.txt

clean:
	-test -x $(BIN)/edgecache && $(BIN)/edgecache redis stop
	rm -rf data .local
