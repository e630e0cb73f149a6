# One-command entry points. `make test` and `make train` create .venv on first use
# (idempotent: the install is redone only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The torch build to install; override e.g. `make test TORCH=torch` for the newest release.
TORCH ?= torch==2.14.1
STAMP := $(VENV)/.installed

.PHONY: install test train clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
