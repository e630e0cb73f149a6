# One-command entry points. `make test` and `make train` create .venv on first use
# (idempotent: the install is redone only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The torch build to install; override e.g. `make test TORCH=torch` for the newest release.
TORCH ?= torch==2.14.1
STAMP := $(VENV)/.installed

.PHONY: install test test-fast train clean gpu-check

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The suite without the tests marked slow (real processes, DDP, kill tests, exports, Triton compiles).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Train on Penn Treebank with the recipe that fits the machine (qrnn_lm.cli.recipes.make_train_recipe):
# the AWD-QRNN recipe on a GPU; on a CPU 20 minutes of wall clock with configs/ptb-cpu-bf16.toml where
# it has native bfloat16, else configs/ptb-cpu.toml. Each run gets its own timestamped folder.
# Offline: QRNN_LM_DATA=../shared/data make train (the data layer reads that variable).
# Extra options go through ARGS, e.g. make train ARGS="--max-steps 100 --no-progress".
ARGS ?=
train: $(STAMP)
	recipe=$$($(PY) -c "from qrnn_lm.cli.recipes import make_train_recipe; print(make_train_recipe())") && \
	$(PY) -m qrnn_lm train --data ptb --config configs/$$recipe.toml --out runs/$$recipe-$$(date +%Y%m%d-%H%M%S) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

# The whole GPU verification (tests with CUDA cases, kernel/layer/LM benchmarks, a short PTB
# run, two-process NCCL training) into one report folder, in at most 8 minutes (each step has a
# time limit); see scripts/gpu_check.py. Runs from the checkout with the python already on the
# machine (no install, no network); `make gpu-check PYTHON=.venv/bin/python` uses `make test`'s
# venv instead. GPU_CHECK_ARGS=--dry-run checks it on a CPU.
GPU_CHECK_ARGS ?=
gpu-check:
	PYTHONPATH=. $(PYTHON) scripts/gpu_check.py $(GPU_CHECK_ARGS)
