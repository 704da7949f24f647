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

.PHONY: setup data demo test test-versions bench bench-heads bench-ensemble lint clean

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
# (pytest-xdist), one test file at a time each (loadfile), so that a file's fixtures (a built
# model, a trained run) are made once, not once per worker.
PYTEST_WORKERS ?= 2
test: data
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -m backends -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The low ends of the ranges pyproject.toml declares, each in its own venv: requirements.txt with
# only the versions that differ substituted (not part of `make test`: about 15 minutes on 2 cores
# once the venvs exist, plus about 4 minutes of installs the first time).
#   GPU images (Kaggle/Colab): tensorflow 2.19.0 (the lowest 2.19 on PyPI), keras 3.10.0, and
#     numpy<2.2 because tensorflow 2.19 requires it; the tests below on TensorFlow.
#   Kaggle's TPU VM image: tensorflow-cpu 2.20.0, keras and jax as pinned (the latest keras);
#     the tests marked `backends` on JAX.
LOWEND_GPU_VENV ?= .venv-lowend-gpu
LOWEND_TPU_VENV ?= .venv-lowend-tpu
VERSION_TESTS := tests/test_layers_dolg.py tests/test_arcface.py tests/test_gem.py tests/test_models.py \
	tests/test_training.py tests/test_inference.py tests/test_efficientnet_lite.py \
	tests/test_optimization.py tests/test_callbacks.py

$(LOWEND_GPU_VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(LOWEND_GPU_VENV)
	sed -e 's/^tensorflow==.*/tensorflow==2.19.0/' -e 's/^keras==.*/keras==3.10.0/' \
		-e 's/^numpy==.*/numpy<2.2/' requirements.txt > $(LOWEND_GPU_VENV)/requirements.txt
	$(LOWEND_GPU_VENV)/bin/python -m pip install -q -r $(LOWEND_GPU_VENV)/requirements.txt -r requirements-dev.txt
	touch $@

$(LOWEND_TPU_VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(LOWEND_TPU_VENV)
	sed -e 's/^tensorflow==.*/tensorflow-cpu==2.20.0/' requirements.txt > $(LOWEND_TPU_VENV)/requirements.txt
	$(LOWEND_TPU_VENV)/bin/python -m pip install -q -r $(LOWEND_TPU_VENV)/requirements.txt -r requirements-dev.txt
	touch $@

test-versions: data $(LOWEND_GPU_VENV)/.installed $(LOWEND_TPU_VENV)/.installed
	@$(LOWEND_GPU_VENV)/bin/python -c "import tensorflow as t, keras as k, numpy as n; print('== GPU-image low end: tensorflow', t.__version__, 'keras', k.__version__, 'numpy', n.__version__)"
	PYTHONPATH=$(CURDIR)/src KERAS_BACKEND=tensorflow $(LOWEND_GPU_VENV)/bin/python -m pytest -q -m "not slow" $(VERSION_TESTS) $(PYTEST_ARGS)
	@$(LOWEND_TPU_VENV)/bin/python -c "import tensorflow as t, keras as k, jax as j; print('== TPU-image end: tensorflow-cpu', t.__version__, 'keras', k.__version__, 'jax', j.__version__)"
	PYTHONPATH=$(CURDIR)/src KERAS_BACKEND=jax $(LOWEND_TPU_VENV)/bin/python -m pytest -q -m backends $(PYTEST_ARGS)

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
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf output/* $(DATA)
