# The two commands in the README: `make demo` and `make test`. Both build .venv first.
# Installs are reproducible: every third-party package comes from requirements/dev.lock,
# pinned with hashes; then Hookline itself without dependencies. `make lock` rewrites the
# locks from pyproject.toml (docs/operations.md, "Dependencies").
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/dev.lock
UV_VERSION := 0.13.9
LOCK_FLAGS := --quiet --universal --python-version 3.11 --generate-hashes --index-url https://pypi.org/simple
# The portal's browser tests use the system chromium; Playwright never downloads one.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

$(BIN)/hookline: pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

.PHONY: install demo test lint lock
install: $(BIN)/hookline

demo: install
	$(BIN)/hookline dev --demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports --no-logo

# Two workers for all but tests/integration (most of its time is waiting on services and
# subprocesses: 10 min instead of 18 on two cores); then tests/integration alone, one at a
# time, because its fault, fail-over and fairness checks time real services and must not
# share the cores with another test. `--dist loadfile`: a file's tests run on one worker,
# in order (the portal's browser tests build on each other). A bare `pytest` still runs
# everything in one process.
test: lint
	$(BIN)/pytest -n 2 --dist loadfile --ignore=tests/integration
	$(BIN)/pytest tests/integration

# uv resolves (pinned here, installed into the venv: nothing else is needed); the image
# installs runtime.lock, developers and CI dev.lock.
lock:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) -o requirements/runtime.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev $(LOCK_FLAGS) -o requirements/dev.lock
