# Two commands on a fresh machine: `make demo` and `make test`.
# Python packages go into .venv; the system packages below come from apt (installed when
# missing, as root).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint demo-deps system-deps

$(BIN)/fogline: pyproject.toml
	@echo "== installing fogline and its dev tools into $(VENV)"
	@$(PYTHON) -m venv $(VENV) || { echo "$(PYTHON) cannot make a venv: apt-get install -y python3-venv"; exit 1; }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

# What the demo needs from the system: a broker. The tests also run mosquitto_pub/_sub (the
# tutorial), a CoAP client (coap-client) and the console in Chromium.
DEMO_PACKAGES := mosquitto
SYSTEM_PACKAGES := $(DEMO_PACKAGES) mosquitto-clients libcoap3-bin chromium

demo-deps: PACKAGES = $(DEMO_PACKAGES)
system-deps: PACKAGES = $(SYSTEM_PACKAGES)
demo-deps system-deps:
	@missing=$$(for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "== installing $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages: sudo apt-get install -y $$missing"; exit 1; \
	  fi; \
	fi

demo: $(BIN)/fogline demo-deps
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
