# The two commands of the README. Each builds .venv from nothing with the machine's
# python3.11 the first time and reuses it afterwards (the stamp file tracks pyproject.toml).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
WHEELS := .cache/wheels
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean servers

# pip compiles the replay kernel (engine/_replay_kernel.pyx, setup.py) and http-parser: a C
# compiler and Python's headers are needed; Debian's machines have both, and they are
# installed with apt-get if missing.
$(STAMP): pyproject.toml setup.py engine/_replay_kernel.pyx tools/build_http_parser.sh
	command -v cc >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends gcc libc6-dev) >/dev/null
	$(PYTHON) -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	    || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	    --no-install-recommends python3-dev) >/dev/null
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade "pip>=24" setuptools wheel
	sh tools/build_http_parser.sh $(BIN)/python $(WHEELS)
	$(BIN)/pip install -q --disable-pip-version-check --find-links $(WHEELS) -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/taskledger demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The HTML report test renders the report in Debian's headless Chromium.
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium) >/dev/null

# The replicated log's and the election's tests start throwaway PostgreSQL and ZooKeeper
# servers (tests/servers.py) from Debian's packages: installed here if missing.
servers:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="postgresql"; \
	test -f /usr/share/java/zookeeper.jar || missing="$$missing zookeeper"; \
	test -z "$$missing" || (apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends $$missing) >/dev/null

test: lint $(CHROMIUM) servers
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks.ingest

clean:
	rm -rf $(VENV) .cache
