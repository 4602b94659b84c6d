# Two set-up commands: `make run` (venv, install, start the service) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CHROMIUM := /usr/bin/chromium

.PHONY: run test test-fast lint bench reproduce browser clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Headless Chromium for the browser tests comes from Debian's package (browser downloads fail offline).
browser:
	@test -x $(CHROMIUM) || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

run: $(STAMP)
	$(VENV)/bin/mmae serve

test: $(STAMP) browser
	$(PY) -m pytest

# The quick loop: no Ray head, no PostgreSQL, no browser, nothing slow (tests that train, start processes or
# wait for more than a few seconds: @pytest.mark.slow, SLOW_FIXTURES in tests/conftest.py), on every core.
test-fast: $(STAMP)
	$(PY) -m pytest -n auto -m "not slow and not ray and not postgres and not browser"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) bench/train_step.py
	$(PY) bench/control_plane.py
	$(PY) bench/overhead.py

# The paper's claims at digits scale (21 CPU runs of 200 steps; not in `make test`): a table and a verdict per claim.
reproduce: $(STAMP)
	$(PY) bench/reproduce.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-output
