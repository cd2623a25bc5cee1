# Occopus developer entry points.  On a fresh machine `make demo` and `make test` do all the
# set-up themselves: system packages (redis-server), a virtualenv in .venv, Python packages.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all install test demo bench docs clean

all: test

install: $(STAMP)

$(STAMP): setup.py requirements.txt
	.ci/install-system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q -n 4 -rs tests

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" examples/demo.sh

bench: install
	@for script in benchmarks/[a-z]*.py; do $(BIN)/python $$script || exit 1; done

docs: install
	$(BIN)/pip install --quiet sphinx
	$(BIN)/sphinx-build -W -q -b html docs docs/_build/html

clean:
	rm -rf $(VENV) docs/_build .pytest_cache build *.egg-info
