"""Attention (opset 23+) against onnxruntime: layouts, heads, masks, causal, cache, symbolic batch."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root

from .ort_check import assert_matches_ort, make_model, run_reference, value_info

RNG = np.random.default_rng(5)
F = np.float32


def _model(inputs: dict[str, tuple], outputs: int = 1, opset: int = 23, **attrs):
    names = list(inputs)
    node_inputs = [n if n in inputs else "" for n in
                   ["Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen"]]
    while node_inputs and not node_inputs[-1]:
        node_inputs.pop()
    outs = ["Y", "present_key", "present_value", "qk"][:outputs]
    node = helper.make_node("Attention", node_inputs, outs, **attrs)
    vis = [value_info(n, dt, shape) for n, (dt, shape) in inputs.items()]
    model = make_model([node], vis, [value_info(o, F, None) for o in outs], opset=opset)
    del names
    return model


def _arrays(inputs: dict[str, tuple], batch: int = 2) -> list[np.ndarray]:
    out = []
    for _, (dt, shape) in inputs.items():
        shape = tuple(batch if isinstance(d, str) else d for d in shape)
        if dt == np.bool_:
            out.append(RNG.integers(0, 2, shape).astype(bool) | (np.arange(shape[-1]) == 0))
        else:
            out.append(RNG.standard_normal(shape).astype(dt))
    return out


CASES = {
    "mha_4d": ({"Q": (F, ["N", 2, 3, 8]), "K": (F, ["N", 2, 5, 8]), "V": (F, ["N", 2, 5, 4])}, {}),
    "gqa_3d": ({"Q": (F, ["N", 3, 32]), "K": (F, ["N", 6, 16]), "V": (F, ["N", 6, 16])},
               {"q_num_heads": 4, "kv_num_heads": 2}),
    "causal_scale": ({"Q": (F, ["N", 2, 4, 8]), "K": (F, ["N", 2, 4, 8]), "V": (F, ["N", 2, 4, 8])},
                     {"is_causal": 1, "scale": 0.3}),
    "float_mask": ({"Q": (F, ["N", 2, 3, 8]), "K": (F, ["N", 2, 5, 8]), "V": (F, ["N", 2, 5, 8]),
                    "attn_mask": (F, [3, 5])}, {}),
    "bool_mask": ({"Q": (F, ["N", 2, 3, 8]), "K": (F, ["N", 2, 5, 8]), "V": (F, ["N", 2, 5, 8]),
                   "attn_mask": (np.bool_, ["N", 1, 3, 5])}, {}),
    "softcap": ({"Q": (F, ["N", 1, 3, 8]), "K": (F, ["N", 1, 3, 8]), "V": (F, ["N", 1, 3, 8])},
                {"softcap": 2.0}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_attention(case: str) -> None:
    inputs, attrs = CASES[case]
    model = _model(inputs, **attrs)
    compiled = sofie_root.compile(model)
    for batch in (1, 3):
        assert_matches_ort(model, *_arrays(inputs, batch), compiled=compiled, rtol=1e-5, atol=1e-5)


def test_attention_cache_and_qk_outputs() -> None:
    inputs = {"Q": (F, [2, 2, 1, 8]), "K": (F, [2, 2, 1, 8]), "V": (F, [2, 2, 1, 8]),
              "past_key": (F, [2, 2, 4, 8]), "past_value": (F, [2, 2, 4, 8])}
    for mode in (0, 2, 3):
        model = _model(inputs, outputs=4, is_causal=1, qk_matmul_output_mode=mode)
        arrays = _arrays(inputs)
        got = sofie_root.compile(model).infer(*arrays)
        ref = run_reference(model, *arrays)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
