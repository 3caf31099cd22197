# Two commands do all set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench demo lint process clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Stage two and the projections in processes of their own beside the API (set
# either variable to inline for threads in the API's process).
run: $(STAMP)
	LEDGER_PROCESSOR=$${LEDGER_PROCESSOR:-process} LEDGER_PROJECTIONS=$${LEDGER_PROJECTIONS:-process} $(BIN)/ledger serve

process: $(STAMP)
	$(BIN)/ledger process

# Two test processes (pytest-xdist): each test makes its own databases, ports and
# folders. More would share PostgreSQL's 100 connections with servers under test.
TEST_JOBS ?= 2

test: $(STAMP)
	@bash scripts/ensure-postgres.sh
	$(BIN)/python -m pytest -n $(TEST_JOBS) $(PYTEST_ARGS)

bench: $(STAMP)
	@bash scripts/ensure-postgres.sh
	$(BIN)/python -m scripts.dev.bench $(BENCH_ARGS)

demo: $(STAMP)
	$(BIN)/python -m scripts.dev.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis
