# make demo / make test work on a fresh machine: they create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-fast lint conformance bench bench-ops clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python tutorials/sofie_root001_quickstart.py

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .

# make bench [BENCH_ARGS="--quick --models dense,cnn --json out.json"]: the benchmark table
# (README "Benchmarks"); JSON in benchmarks/results/latest.json unless --json says otherwise
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# make bench-ops [BENCH_OPS_ARGS="--quick --ops Softmax,LayerNormalization"]: the per-operator table
# (README "Per-operator table"); JSON in benchmarks/results/ops.json
BENCH_OPS_ARGS ?=
bench-ops: $(STAMP)
	$(BIN)/python benchmarks/ops.py $(BENCH_OPS_ARGS)

conformance: $(STAMP)
	$(BIN)/python ../shared/tools/onnx_node_conformance.py project

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
