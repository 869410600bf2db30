# ccportal — `make run` serves the portal with the sandbox and a worker; `make test` runs the suite.
# `make test-fast`: the tests that start no child process (the inner loop, under a minute).
# Both run in TEST_WORKERS parallel pytest processes (most of the suite waits on the sandbox,
# workers and clocks, not on the CPU); TEST_WORKERS=0 runs in this one process.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000
SANDBOX_PORT ?= 8765
TEST_WORKERS ?= 4
PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

.PHONY: install run test test-fast lint bench faults browser clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Debian's chromium drives the browser tests (Playwright's own download is not used).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed: browser tests will be skipped"; }

run: install
	@$(PY) manage.py migrate --noinput -v 0
	@$(PY) manage.py ensure_staff_login
	@$(PY) manage.py serve_portal --port $(PORT) --sandbox-port $(SANDBOX_PORT)

test: install browser
	@$(PY) -m pytest $(PARALLEL) $(PYTEST_ARGS)

test-fast: install
	@CCPORTAL_TEST_TIER=fast $(PY) -m pytest -m "not slow and not browser" $(PARALLEL) $(PYTEST_ARGS)

# Formatting, ruff's rules, and the import contracts that enforce the layers (pyproject.toml).
lint: install
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/lint-imports --no-cache

bench: install
	@$(PY) bench/run_all.py

# One row per fault (5xx, resets, timeouts, activity end states, outages, kills, Redis,
# SQLite, key rotation) against real processes; exits 1 if any row lost or duplicated work.
faults: install
	$(PY) bench/faults.py $(FAULTS_ARGS)

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache
