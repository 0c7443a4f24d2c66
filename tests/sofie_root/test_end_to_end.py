"""End-to-end: typical HEP networks built with torch, exported to ONNX (the dynamo exporter,
symbolic batch), compiled, and compared with onnxruntime and torch at batch 1 and 64.

The models are the benchmark models (benchmarks/hep_models.py): a dense classifier, a Conv1D+LSTM
jet tagger, a small CNN, a ParticleNet-style EdgeConv tagger (k-NN by TopK + Gather) and a
transformer-encoder tagger."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import sofie_root
from benchmarks import hep_models

from .ort_check import run_ort

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module", params=sorted(hep_models.MODELS))
def exported(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / f"{request.param}.onnx"
    module = hep_models.export(request.param, path)
    return request.param, module, path


@pytest.mark.parametrize("batch", [1, 64])
def test_matches_onnxruntime(exported, batch: int) -> None:
    name, module, path = exported
    model = sofie_root.compile(path)
    assert isinstance(model.inputs[0].shape[0], str), "the batch dimension must stay symbolic"
    arrays = hep_models.inputs(name, batch, np.random.default_rng(batch))
    ours = model.infer(*arrays)
    ref = run_ort(onnx.load(path), *arrays)
    assert len(ours) == len(ref)
    for a, r in zip(ours, ref):
        assert a.shape == r.shape
        np.testing.assert_allclose(a, r, rtol=RTOL, atol=ATOL)
    with torch.no_grad():
        t = module(*(torch.from_numpy(a) for a in arrays)).numpy()
    np.testing.assert_allclose(ours[0], t, rtol=RTOL, atol=ATOL)


# the patterns each model is there to exercise: an exporter change that drops them would make the
# comparison above pass without testing them
PATTERNS = {"particlenet": {"TopK", "Gather", "Conv", "ReduceMean", "Range"},
            "transformer": {"LayerNormalization", "Softmax", "MatMul", "Gelu", "Expand"},
            "jet": {"LSTM", "Conv"}, "cnn": {"Conv", "MaxPool", "AveragePool"}, "dense": {"Gemm", "Sigmoid"}}


def test_exported_patterns(exported) -> None:
    name, _, path = exported
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert PATTERNS[name] <= ops, f"{name}: missing {PATTERNS[name] - ops}"
