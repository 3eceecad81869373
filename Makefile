# Every install step lives here: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench lint clean ui

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

## A full demo release on embedded defaults (SQLite Dagster instance, local platform).
demo: $(STAMP)
	$(BIN)/release demo

## The whole test suite, Postgres tests included (RELEASE_TEST_POSTGRES_URL picks the server),
## on TEST_WORKERS pytest-xdist workers. All tests of a file run on one worker (--dist loadfile:
## module-scoped servers start once, the fault matrix's cells and the production-mode tests keep
## their order; loadgroup's xdist_group is ignored under pytest 9.2 with xdist 3.8). Two workers per
## core: the suite waits on servers, sensors and live traffic more than it computes. The slowest
## tests and the wall time are printed at the end.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) * 2 )))
test: $(STAMP)
	$(BIN)/python -m tests.setup_services
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

## Unit tests only: the pure core and the CLI, about a minute.
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

## The layer contracts (import-linter, pyproject.toml); the unit tests run them too.
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check release_pipelines assets resources

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

ui: $(STAMP)
	DAGSTER_HOME=$(CURDIR)/.release/dagster_home $(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf .release .pytest_cache
