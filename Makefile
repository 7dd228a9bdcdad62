# atoma-lab: one Makefile, its own virtual environments.
#   make demo       set up, then a confidential embeddings round trip through the simulator
#   make test       set up, then the whole test suite (notebooks included; Ray's in a namespace)
#   make bench      set up, then the benchmark suite; saves JSON and prints the ratios
#   make notebooks  set up, then execute the full notebooks into build/notebooks as HTML
#   make lint       ruff and mypy
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SDK_VENV := .venv-sdk
SDK_STAMP := $(SDK_VENV)/.installed
INFINITY_VENV := .venv-infinity
INFINITY_STAMP := $(INFINITY_VENV)/.installed
INFINITY_PYTHON := $(CURDIR)/$(INFINITY_VENV)/bin/python
ST_ONNX_VENV := .venv-st-onnx
ST_ONNX_STAMP := $(ST_ONNX_VENV)/.installed
ST_ONNX_PYTHON := $(CURDIR)/$(ST_ONNX_VENV)/bin/python
# pip on these machines warns about configured local indexes that do not exist; hide that noise.
PIP_FILTER := 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup sdk-setup infinity-setup st-onnx-setup demo test test-ray test-fast bench notebooks lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing atoma-lab and its extras into $(VENV) (torch pinned by constraints.txt)"
	$(BIN)/python -m pip install -q --upgrade pip $(PIP_FILTER)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[all]' $(PIP_FILTER)
	@touch $(STAMP)

# The official Atoma client pins pydantic<2.11 and httpx<0.29: it lives in a venv of its own.
sdk-setup: $(SDK_STAMP)

$(SDK_STAMP): tests/sdk_requirements.txt
	@test -x $(SDK_VENV)/bin/python || $(PYTHON) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/python -m pip install -q -r tests/sdk_requirements.txt $(PIP_FILTER)
	@touch $(SDK_STAMP)

# infinity-emb, the embedding server a node can forward to (tests/backends, benchmarks), in a venv
# of its own: it brings its own sentence-transformers and transformers. torch stays pinned.
infinity-setup: $(INFINITY_STAMP)

$(INFINITY_STAMP): tests/backends/infinity_requirements.txt constraints.txt
	@test -x $(INFINITY_VENV)/bin/python || $(PYTHON) -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/python -m pip install -q -c constraints.txt \
		-r tests/backends/infinity_requirements.txt $(PIP_FILTER)
	@touch $(INFINITY_STAMP)

# sentence-transformers with its ONNX backend (optimum-onnx pins transformers<4.58), the peer the
# embedding benchmarks run beside the engine, in a venv of its own. torch stays pinned.
st-onnx-setup: $(ST_ONNX_STAMP)

$(ST_ONNX_STAMP): benchmarks/peers/st_onnx_requirements.txt constraints.txt
	@test -x $(ST_ONNX_VENV)/bin/python || $(PYTHON) -m venv $(ST_ONNX_VENV)
	$(ST_ONNX_VENV)/bin/python -m pip install -q -c constraints.txt \
		-r benchmarks/peers/st_onnx_requirements.txt $(PIP_FILTER)
	@touch $(ST_ONNX_STAMP)

demo: setup
	$(BIN)/atoma-lab demo

# Everything that runs on a 2-core CPU machine: the unit, integration and SDK tests, then every
# notebook in quick mode (nbmake) with Ray off (ATOMA_LAB_NOTEBOOK_RAY=0); then the Ray tests
# and the notebooks that use Ray, with it on (test-ray). Where test-ray can run those notebooks
# (a loopback-only namespace), they are left to it rather than run twice. The gpu-marked tests
# skip themselves without CUDA.
test: setup sdk-setup infinity-setup
	ATOMA_LAB_SDK_PYTHON=$(CURDIR)/$(SDK_VENV)/bin/python ATOMA_LAB_INFINITY_PYTHON=$(INFINITY_PYTHON) \
		ATOMA_LAB_QUICK=1 ATOMA_LAB_NOTEBOOK_RAY=0 \
		$(BIN)/python -m pytest tests notebooks --nbmake --nbmake-timeout=600 -p no:cacheprovider \
		-m "not ray" $$(unshare -n true 2>/dev/null && echo --ignore=$(RAY_NOTEBOOKS))
	$(MAKE) --no-print-directory test-ray

# Ray advertises the machine's address and listens beyond loopback: its tests, and
# notebooks/06_scale_out.ipynb with Ray on, run in a network namespace of their own whose only
# interface is loopback (unshare -n, as root: as CI runs). Where no such namespace can be made,
# the tests run anyway and skip, saying why, and the notebook keeps its run with Ray off.
RAY_NOTEBOOKS := notebooks/06_scale_out.ipynb

test-ray: setup
	@if unshare -n true 2>/dev/null; then \
		unshare -n bash -c 'ip link set lo up && export RAY_AUTH_MODE=disabled ATOMA_LAB_QUICK=1 && \
			$(BIN)/python -m pytest tests -m ray -p no:cacheprovider && \
			ATOMA_LAB_NOTEBOOK_RAY=1 $(BIN)/python -m pytest $(RAY_NOTEBOOKS) --nbmake \
				--nbmake-timeout=600 -p no:cacheprovider'; \
	else \
		echo "no private network namespace here (unshare -n needs root): the Ray tests skip"; \
		$(BIN)/python -m pytest tests -m ray -p no:cacheprovider -rs; \
		echo "and $(RAY_NOTEBOOKS) ran with Ray off only (make test)"; \
	fi

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not integration and not sdk" -x -q

# The Ray benchmarks need a network namespace with only loopback (see test-ray); the others run
# the same inside one, so the whole suite runs there where one can be made.
BENCH_RUN := ATOMA_LAB_INFINITY_PYTHON=$(INFINITY_PYTHON) ATOMA_LAB_ST_ONNX_PYTHON=$(ST_ONNX_PYTHON) RAY_AUTH_MODE=disabled $(BIN)/python -m pytest \
	benchmarks --benchmark-only --benchmark-json=build/bench/latest.json -q

bench: setup infinity-setup st-onnx-setup
	@mkdir -p build/bench
	@if unshare -n true 2>/dev/null; then unshare -n bash -c 'ip link set lo up && $(BENCH_RUN)'; \
	else $(BENCH_RUN); fi
	$(BIN)/python -m atoma_lab.tools.benchreport build/bench/latest.json

# The notebooks run Ray where it is installed (06's Ray sections): in a loopback-only namespace
# where one can be made, as the tests do.
NOTEBOOKS_RUN := ATOMA_LAB_QUICK=0 RAY_AUTH_MODE=disabled $(BIN)/python -m atoma_lab.tools.notebook_runner \
	notebooks build/notebooks

notebooks: setup
	@mkdir -p build/notebooks
	@if unshare -n true 2>/dev/null; then unshare -n bash -c 'ip link set lo up && $(NOTEBOOKS_RUN)'; \
	else echo "no private network namespace here: the notebooks run with Ray off"; \
		ATOMA_LAB_NOTEBOOK_RAY=0 $(NOTEBOOKS_RUN); fi

lint: setup
	$(BIN)/ruff check atoma_lab tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(SDK_VENV) $(INFINITY_VENV) $(ST_ONNX_VENV) build .pytest_cache .mypy_cache .ruff_cache
