#!/usr/bin/env bash
# make gpu-check: on a machine with an NVIDIA GPU (or AMD with GPU_BACKEND=hip), from a plain
# checkout and with nothing downloaded: build the GPU tests' models with nvcc, run them on the
# device against onnxruntime, then benchmark batch 1, 256 and 4096 against PyTorch on the same GPU
# and onnxruntime (table in benchmarks/results/gpu-check.md). Needs numpy, onnx, onnxruntime,
# torch, pytest and nvidia-cublas (or a CUDA toolkit with cuBLAS); ROOT is not needed.
# Without a usable GPU it stops at once, saying why. Takes a few minutes (nvcc ~2-15 s per model).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
BACKEND="${GPU_BACKEND:-cuda}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export SOFIE_ROOT_LAZY=1   # no ROOT start: the GPU path does not use it

if ! ARCH=$("$PY" -c "
import sys, sofie_root
s = sofie_root.gpu_available('$BACKEND')
print(f'gpu-check ($BACKEND):', s.reason, file=sys.stderr)
print(s.arch)
sys.exit(0 if s else 1)
"); then
  echo "gpu-check: stopped: no usable $BACKEND GPU on this machine (see the reason above); the GPU" >&2
  echo "kernels are tested without a GPU by 'make test' (tests/sofie_root/test_gpu.py, emulated)." >&2
  exit 2
fi

# build for this GPU only (a fat binary per model and node-case group would double the build time)
if [ "$BACKEND" = cuda ] && [ -n "$ARCH" ] && [ -z "${SOFIE_ROOT_CUDA_ARCHS:-}" ]; then
  export SOFIE_ROOT_CUDA_ARCHS="$ARCH"
fi
start=$(date +%s)
SOFIE_GPU_TEST_BACKEND="$BACKEND" "$PY" -m pytest -q -p no:cacheprovider tests/sofie_root/test_gpu.py \
  -k "model_matches or test_node_cases or device_inputs or index_out_of_range or epilogue" --durations=10
"$PY" benchmarks/gpu.py --backend "$BACKEND" --batches 1,256,4096 --quick --out benchmarks/results/gpu-check.md
echo "gpu-check: done in $(( $(date +%s) - start )) s; table in benchmarks/results/gpu-check.md"
