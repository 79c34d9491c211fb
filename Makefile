# The two commands of the README: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck imports docs docs-serve pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files: reinstall only when the package metadata changes.
$(VENV)/.installed-demo: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed-demo
	rm -f quickstart.db quickstart.db-wal quickstart.db-shm
	$(BIN)/python examples/quickstart.py sqlite:///quickstart.db

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# The import contracts in pyproject.toml: repositories never imports uow, the core never imports
# the integrations, the integrations do not import one another.
imports: $(VENV)/.installed-test
	$(BIN)/lint-imports

# The user manual (mkdocs-material + mkdocstrings); --strict fails on any warning (broken links,
# unresolved API references, bad docstrings). The output goes to site/.
docs: $(VENV)/.installed-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The manual at http://127.0.0.1:8000, rebuilt on every edit of docs/ or the docstrings.
docs-serve: $(VENV)/.installed-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict

# Runs the suite on SQLite and on a throwaway PostgreSQL server (stopped even when tests fail).
pytest: $(VENV)/.installed-test
	scripts/with-postgres $(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck imports docs pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache quickstart.db* site

# Prints the table of ratios against plain SQLAlchemy and the raw driver (SQLite and PostgreSQL).
bench: $(VENV)/.installed-test
	scripts/with-postgres $(BIN)/python benchmarks/bench.py $(BENCH_ARGS)
