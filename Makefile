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

install: $(VENV)/.installed

demo: install
	$(BIN)/vlmtune quickstart --out quickstart_out

# Both tiers: the fast one first (it fails early), then the slow one (kill -9, DDP, the service's jobs).
test: install
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -m slow

lint: install
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) quickstart_out
