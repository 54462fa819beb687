# The two commands of the README. Each builds .venv from nothing with the machine's
# python3.11 the first time and reuses it afterwards (the stamp file tracks pyproject.toml).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
WHEELS := .cache/wheels
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml tools/build_http_parser.sh
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

test: lint $(CHROMIUM)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks.ingest

clean:
	rm -rf $(VENV) .cache
