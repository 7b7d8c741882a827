# The two commands of the README: `make demo` (set up + quickstart) and `make test` (set up + tests).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install lint clean

# The stamp file makes set-up run once, and again only when the dependencies change.
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

# The tests also need the ray extra: the Ray executor's tests start a Ray head of their own.
$(VENV)/.installed-ray: $(VENV)/.installed
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev,ray]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/vlmtune quickstart --out quickstart_out

# Two passes: the default suite, then the Ray executor against a small Ray head on 127.0.0.1 (8 tests, ~6 min on 2 cores).
test: install $(VENV)/.installed-ray
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -m ray

lint: install
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) quickstart_out
