# Two commands on a fresh machine: `make demo` and `make test`.
# Python packages go into .venv; mosquitto comes from the system (installed when missing).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint system-deps

$(BIN)/fogline: pyproject.toml
	@echo "== installing fogline and its dev tools into $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

system-deps:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "== installing mosquitto"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; \
	  else \
	    echo "mosquitto is missing: sudo apt-get install -y mosquitto mosquitto-clients"; exit 1; \
	  fi; }

demo: $(BIN)/fogline system-deps
	$(BIN)/fogline demo

lint: $(BIN)/fogline
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(BIN)/fogline system-deps lint
	$(BIN)/fogline pipeline check pipelines/*.yaml
	$(BIN)/python -m pytest
