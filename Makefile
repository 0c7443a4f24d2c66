# make demo / make test work on a fresh machine: they create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-fast lint conformance bench bench-ops bench-readme gpu-check gpu-compile-times clean docs docs-gallery

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# cuBLAS headers for the nvcc compile check of the GPU backend's sources (only where nvcc is)
	if command -v nvcc >/dev/null 2>&1 || test -x /usr/local/cuda/bin/nvcc; then \
	  $(BIN)/python -m pip install --quiet -e '.[test,cuda]'; fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python tutorials/sofie_root001_quickstart.py

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .

# make bench [BENCH_ARGS="--quick --models dense,cnn --json out.json"]: the benchmark table
# (docs/performance.md, "Benchmarks"); JSON in benchmarks/results/latest.json unless --json says otherwise
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# make bench-ops [BENCH_OPS_ARGS="--quick --ops Softmax,LayerNormalization"]: the per-operator table
# (docs/performance.md, "Per-operator table"); JSON in benchmarks/results/ops.json
BENCH_OPS_ARGS ?=
bench-ops: $(STAMP)
	$(BIN)/python benchmarks/ops.py $(BENCH_OPS_ARGS)

# make bench-readme: the README's speed summary from the last bench and bench-ops JSON
bench-readme: $(STAMP)
	$(BIN)/python benchmarks/readme.py

# on a machine with a GPU: build, run the GPU tests on the device, benchmark against PyTorch and
# ONNX Runtime (benchmarks/results/gpu-check.md); stops at once, saying why, without a GPU
gpu-check:
	bash tools/gpu_check.sh

# no GPU needed: g++ (emulated), nvcc and hipcc compile times of each corpus model's generated
# source, those compilers that are installed (benchmarks/results/gpu-compile.md, docs/guide/gpu.md)
gpu-compile-times: $(STAMP)
	$(BIN)/python benchmarks/gpu_compile.py

# the documentation site (Sphinx, furo, MyST) into docs/_build/html; warnings are errors
docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html

# refresh the gallery's plots: run every tutorial that draws and keep its PNGs
docs-gallery: $(STAMP)
	mkdir -p docs/_static/gallery /tmp/sofie_root_gallery
	for t in tutorials/*.py; do (cd /tmp/sofie_root_gallery && $(abspath $(BIN))/python $(CURDIR)/$$t) || exit 1; done
	cp /tmp/sofie_root_gallery/*.png docs/_static/gallery/

conformance: $(STAMP)
	$(BIN)/python ../shared/tools/onnx_node_conformance.py project

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
