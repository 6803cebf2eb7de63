# The two commands of the README: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck chaos bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ketenhub run

# Most tests wait on brokers, databases and partners more than they compute: three workers keep
# two cores busy. Tests marked solo measure time against a bound and run after them, alone, also
# when the others failed; pytest's 5 (no test selected, say with PYTEST_ADDOPTS=-k) is no failure.
# The 25 slowest tests are listed at the end: where the suite's time goes.
TEST_WORKERS ?= 3

test: $(STAMP)
	@status=0; \
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not solo" --durations=25 || status=$$?; \
	[ $$status -eq 5 ] && status=0; \
	$(BIN)/python -m pytest -q -m solo || { rc=$$?; [ $$rc -eq 5 ] || status=$$rc; }; \
	exit $$status

lint: $(STAMP)
	$(BIN)/ruff check schemas connectors hub tests bench
	$(BIN)/ruff format --check schemas connectors hub tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

chaos: $(STAMP)
	KETENHUB_CHAOS_LONG=1 $(BIN)/python -m pytest -q tests/chaos

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) ketenhub.db .pytest_cache
