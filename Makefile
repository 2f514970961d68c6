# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# Each creates .venv when it is missing and installs the project into it first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= fld-data
PYTEST_ARGS ?=

.PHONY: run test test-slow bench lock clean help system
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

# Debian packages some tests use: chromium (`fld report` is rendered by a real browser) and
# docker-compose (docker-compose.yml is validated with `docker-compose config`). Installed when
# missing and this is a root shell with apt; otherwise those tests say they were skipped.
system:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v docker-compose >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium docker-compose >/dev/null; \
	  else echo "note: install Debian's chromium and docker-compose to run the browser and compose tests"; fi; \
	fi

# The main job: world -> ingest -> bootstrap (YOLO, SAM, Florence-2 on the seed split) -> round 1
# -> refinement rounds, all through Prefect and Ray; then the per-round metrics and a report.
PROFILE ?= default
run: $(STAMP)
	$(BIN)/fld run --out $(DATA) --profile $(PROFILE)
	$(BIN)/fld rounds --data $(DATA)/dataset
	$(BIN)/fld stats --data $(DATA)/dataset
	$(BIN)/fld report --data $(DATA)/dataset --out $(DATA)/report.html --overwrite

test: $(STAMP) system
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP) system
	$(BIN)/python -m pytest -m "slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/store.py
	$(BIN)/python bench/world.py
	$(BIN)/python bench/faults.py
	$(BIN)/python bench/filters.py
	$(BIN)/python bench/specialists.py
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/engine.py --images 400
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/loop.py --profile default

# Refresh the lock from the current environment after changing dependencies.
lock: $(STAMP)
	{ head -n 2 requirements.lock; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^fld-engine'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(DATA) .pytest_cache bench/results
