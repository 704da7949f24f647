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

.PHONY: setup data demo test bench bench-heads bench-ensemble lint clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

data: $(DATA)/train.csv

$(DATA)/train.csv: $(STAMP) src/landmarks/data/demo.py
	$(BIN)/python -m landmarks demo-data --out $(DATA)

demo: data
	$(BIN)/python -m landmarks demo

# The backend is fixed per process: the whole suite on TensorFlow, then the tests marked
# `backends` (behaviour that depends on the backend) again on JAX. Two worker processes
# (pytest-xdist; worksteal: an idle worker takes queued tests from the busy one), since many
# tests wait on subprocesses, notebook kernels and kills rather than compute.
PYTEST_WORKERS ?= 2
test: data
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -m backends -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The ratio benchmarks (each prints its ratios as JSON on its last line). bench/heads_gap.py
# trains four demo models at the demo budget (about an hour on 2 cores): `make bench-heads`.
RATIO_BENCHES := bench/build.py bench/pipeline.py bench/model.py bench/train_optimizer.py bench/knn.py \
	bench/rerank_cost.py

bench: data
	@for script in $(RATIO_BENCHES); do echo "== $$script"; $(BIN)/python $$script || exit 1; done

bench-heads: data
	$(BIN)/python bench/heads_gap.py

# Two demo models, their ensembles and every retrieval re-ranking (about 15 minutes on 2 cores).
bench-ensemble: data
	$(BIN)/python bench/ensemble.py

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf output/* $(DATA)
