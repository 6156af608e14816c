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

SYSTEM_PACKAGES := mosquitto mosquitto-clients libcoap3-bin chromium

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "== installing $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages: sudo apt-get install -y $$missing"; exit 1; \
	  fi; \
	fi

demo: $(BIN)/fogline system-deps
	$(BIN)/fogline demo

lint: $(BIN)/fogline
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Test files run on TEST_WORKERS workers, each file's tests in order on one worker: every
# test starts its own brokers, ports, databases and schemas, and most of the time is spent
# waiting on them (2 cores: 5.7 min on three workers, 21 min one file at a time).
TEST_WORKERS ?= 3

test: $(BIN)/fogline system-deps lint
	$(BIN)/fogline pipeline check pipelines/*.yaml
	$(BIN)/fogline pipeline test pipelines/*.yaml
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile
