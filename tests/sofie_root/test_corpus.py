"""The benchmark corpus (benchmarks/corpus.py) as correctness tests: every model that is not
already one of the end-to-end models (tests/sofie_root/test_end_to_end.py) is compiled once and
compared with onnxruntime and with torch at batch 1 and at a small batch.

The exports are cached on disk by the corpus (``SOFIE_CORPUS_CACHE``), so a second run only
compiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sofie_root
from benchmarks import corpus, hep_models

from .ort_check import run_ort

RTOL, ATOL = 1e-4, 1e-5


def test_corpus_api() -> None:
    assert len(corpus.MODELS) >= 12
    assert set(hep_models.MODELS) <= set(corpus.MODELS)
    assert set(corpus.NEW) == set(corpus.MODELS) - set(hep_models.MODELS)
    for name, entry in corpus.MODELS.items():
        assert entry.name == name and entry.summary
        a, b = entry.inputs(3), entry.inputs(3)
        assert all(x.dtype == np.float32 and x.shape[0] == 3 for x in a)
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), "example inputs are deterministic"


@pytest.fixture(scope="module")
def compiled():
    """name -> (ModelProto, compiled model, torch module), each compiled once for the module."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            proto, _ = corpus.MODELS[name](batch=1)
            cache[name] = proto, sofie_root.compile(proto), corpus.MODELS[name].module()
        return cache[name]

    return get


@pytest.mark.parametrize("name", corpus.NEW)
@pytest.mark.parametrize("batch", [1, 5])
def test_corpus_model_matches_onnxruntime_and_torch(compiled, name: str, batch: int) -> None:
    proto, model, module = compiled(name)
    assert all(isinstance(i.shape[0], str) for i in model.inputs), "the batch dimension must stay symbolic"
    arrays = corpus.MODELS[name].inputs(batch, np.random.default_rng(100 + batch))
    ours = model.infer(*arrays)
    ref = run_ort(proto, *arrays)
    assert len(ours) == len(ref)
    for a, r in zip(ours, ref):
        assert a.shape == r.shape
        np.testing.assert_allclose(a, r, rtol=RTOL, atol=ATOL)
    with torch.no_grad():
        t = module(*(torch.from_numpy(a) for a in arrays)).numpy()
    np.testing.assert_allclose(ours[0], t, rtol=RTOL, atol=ATOL)


def test_key_padding_mask(compiled) -> None:
    """mha_transformer on zero-padded particle lists equals torch on the same events without the
    padding slots (no mask needed there): the padded slots take no part in the attention."""
    _, model, module = compiled("mha_transformer")
    x = corpus.MODELS["mha_transformer"].inputs(6, np.random.default_rng(7))[0]
    real = (np.abs(x).sum(axis=-1) != 0).sum(axis=1)
    assert (real < x.shape[1]).any(), "the example inputs must contain padding"
    ours = model.infer(x)[0]
    with torch.no_grad():
        for i, n in enumerate(real):
            ref = module(torch.from_numpy(x[i:i + 1, :n])).numpy()[0]
            np.testing.assert_allclose(ours[i], ref, rtol=RTOL, atol=ATOL)
