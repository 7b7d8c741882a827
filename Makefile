# The two commands of the README: `make demo` (set up + quickstart) and `make test` (set up + tests).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install browser lint clean

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

# The dashboard's browser tests (slow tier) drive the distribution's Chromium (never a downloaded build): installed
# here when missing. VLMTUNE_SKIP_BROWSER_TESTS=1 skips both the install and those tests; otherwise they fail without it.
CHROMIUM ?= $(or $(VLMTUNE_CHROMIUM),/usr/bin/chromium)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@if [ "$$VLMTUNE_SKIP_BROWSER_TESTS" != 1 ] && [ ! -x $(CHROMIUM) ]; then \
	  echo "installing Chromium for the dashboard's browser tests (apt-get install chromium)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

# Both tiers: the fast one first (it fails early), then the slow one (kill -9, DDP, the service's jobs, the
# dashboard in a browser, and the Ray executor against a Ray head of its own on 127.0.0.1; hence the ray extra).
test: install $(VENV)/.installed-ray browser
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -m slow

lint: install
	$(BIN)/ruff check src tests bench examples

clean:
	rm -rf $(VENV) quickstart_out
