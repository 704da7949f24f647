# Set-up and every entry point. A fresh machine needs only Python 3.11 and the package registries:
# `make setup` makes the venv, `make data` fetches the demo photographs (Debian package, no install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA := input/mini-landmarks
PYTEST_ARGS ?=

export NO_ALBUMENTATIONS_UPDATE := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUNBUFFERED := 1

.PHONY: setup data demo test test-stacks bench bench-heads bench-ensemble lint clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-beam.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-beam.txt -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

data: $(DATA)/train.csv

$(DATA)/train.csv: $(STAMP) src/landmarks/data/demo.py
	$(BIN)/python -m landmarks demo-data --out $(DATA)

demo: data
	$(BIN)/python -m landmarks demo

# The backend is fixed per process: the whole suite on TensorFlow, then the tests marked
# `backends` (behaviour that depends on the backend) again on JAX. Two worker processes
# (pytest-xdist), one test file at a time each (loadfile), so that a file's fixtures (a built
# model, a trained run) are made once, not once per worker.
PYTEST_WORKERS ?= 2
test: data
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -m backends -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Every runtime users have, as a replica: stacks/<name>.txt is one runtime's pinned package list
# (its public source and date in its header: Colab's TPU runtime, Kaggle's/Colab's GPU image,
# Kaggle's TPU VM image, the low ends pyproject.toml declares, this project's own pins). For
# each, stacks/run_stack.py makes a venv .stacks/<name> with that list alone and the stack's
# Python, installs the landmarks wheel as the notebooks do (--no-deps, then install_missing),
# checks the stack's own accelerator packages were kept, and runs the Kaggle dry run and the
# `backends` tests on the stack's backend. Not part of `make test`: about 1 GB of installs per
# stack the first time, then 10-25 minutes per stack on 2 cores. Needs `make data` first; a
# Python of each stack's version (PYTHON_3_13=... when python3.13 is not on PATH or in pyenv).
#   make test-stacks STACKS="colab-tpu kaggle-tpu-vm"
STACKS ?= colab-tpu kaggle-gpu kaggle-tpu-vm lowend-gpu project

test-stacks:
	@test -f $(DATA)/train.csv || { echo "error: $(DATA)/train.csv missing: run make data"; exit 2; }
	@status=0; for stack in $(STACKS); do \
		$(PYTHON) stacks/run_stack.py $$stack $(PYTEST_ARGS) || status=1; done; \
	echo "== results (also in .stacks/results.md)"; tail -n $(words $(STACKS)) .stacks/results.md; \
	exit $$status

# The ratio benchmarks (each prints its ratios as JSON on its last line). bench/heads_gap.py
# trains four demo models at the demo budget (about an hour on 2 cores): `make bench-heads`.
RATIO_BENCHES := bench/build.py bench/beam_build.py bench/pipeline.py bench/model.py bench/train_optimizer.py bench/knn.py \
	bench/rerank_cost.py

bench: data
	@for script in $(RATIO_BENCHES); do echo "== $$script"; $(BIN)/python $$script || exit 1; done

bench-heads: data
	$(BIN)/python bench/heads_gap.py

# Two demo models, their ensembles and every retrieval re-ranking (about 15 minutes on 2 cores).
bench-ensemble: data
	$(BIN)/python bench/ensemble.py

lint: setup
	$(BIN)/ruff check src tests bench stacks
	$(BIN)/ruff format --check src tests bench stacks

clean:
	rm -rf output/* $(DATA)
