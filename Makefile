# Two commands for a newcomer: `make run` serves the catalog, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install run worker test chaos lint docs bench migrate clean

$(INSTALLED): pyproject.toml examples/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[fastapi,container,metrics,outbox,tracing,testing,migrations]" -e ./examples --group dev
	touch $(INSTALLED)

install: $(INSTALLED)

## Serve the catalog on http://127.0.0.1:8000 (embedded PostgreSQL unless DATABASE_URL is set).
run: install
	$(BIN)/python -m catalog.devserver

## Run the catalog's outbox worker (same database settings as make run; OUTBOX__* settings).
worker: install
	$(BIN)/python -m catalog.worker

## Run the whole suite against TEST_DATABASE_URL (default: 127.0.0.1:5432, else embedded).
test: install
	$(BIN)/pytest

## The chaos scenarios at full size (CI runs them short, in `make test`): backend kills,
## restarts, a paused and restarted PgBouncer, a saturated server, vacuum held back, kill -9.
## CHAOS_SCALE=1 is CI's size; the table of results is printed at the end.
CHAOS_SCALE ?= 5
chaos: install
	CHAOS_SCALE=$(CHAOS_SCALE) $(BIN)/pytest -p no:cacheprovider tests/chaos

## ruff, mypy --strict, and the architecture check on the catalog.
lint: install
	$(BIN)/asyncdal check examples/catalog migrations
	$(BIN)/ruff check src examples tests migrations bench
	$(BIN)/ruff format --check src examples tests migrations bench
	$(BIN)/mypy

## Build the documentation site into site/ (mkdocs, strict: any warning fails the build).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## Apply migrations to the configured database.
migrate: install
	$(BIN)/alembic upgrade head
	$(BIN)/alembic -x database=reference upgrade head

## Throughput of raw asyncpg vs plain SQLAlchemy vs asyncdal, pooler and replica costs (needs wrk).
bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .data .mypy_cache .ruff_cache .pytest_cache site
