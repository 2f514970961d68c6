# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# Each creates .venv when it is missing and installs the project into it first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= fld-data
PYTEST_ARGS ?=

.PHONY: run test test-slow bench lock clean help
help:
	@echo "make run        set up, then run the main job on the embedded default"
	@echo "make test       set up, then run the default (fast) test suite"
	@echo "make test-slow  the slow tests too"
	@echo "make bench      the benchmarks in bench/ (JSON in bench/results/)"

# Installing against requirements.lock gives pip one candidate per package (minutes, not tens).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/fld --help
	$(BIN)/fld world make --images 120 --seed 0 --out $(DATA)/world --overwrite
	$(BIN)/fld ingest $(DATA)/world/images/pool --data $(DATA)/dataset --split pool
	$(BIN)/fld ingest $(DATA)/world/images/gold --data $(DATA)/dataset --split gold
	$(BIN)/fld stats --data $(DATA)/world/truth
	$(BIN)/fld round run --config engine/configs/embedded.toml --data $(DATA)/dataset --round 1 --gold $(DATA)/world/gold
	$(BIN)/fld rounds --data $(DATA)/dataset
	$(BIN)/fld stats --data $(DATA)/dataset
	$(BIN)/fld metrics --data $(DATA)/dataset

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/store.py
	$(BIN)/python bench/world.py
	$(BIN)/python bench/filters.py
	$(BIN)/python bench/specialists.py
	$(BIN)/python bench/engine.py

# Refresh the lock from the current environment after changing dependencies.
lock: $(STAMP)
	{ head -n 2 requirements.lock; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^fld-engine'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(DATA) .pytest_cache bench/results
