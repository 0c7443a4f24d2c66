"""Graph passes: each is switchable and gives the same results (within float tolerance) as the
graph without it."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root
from sofie_root.passes import DEFAULT, PASSES

from .ort_check import make_model, value_info

RNG = np.random.default_rng(11)


def _dense(trans_b: int) -> object:
    w = RNG.standard_normal((16, 7) if trans_b else (7, 16)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=trans_b),
             helper.make_node("Relu", ["h"], ["y"])]
    return make_model(nodes, [value_info("x", np.float32, ["N", 7])], [value_info("y", np.float32, None)],
                      {"w": w, "b": RNG.standard_normal(16).astype(np.float32)})


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("name", sorted(PASSES))
def test_each_pass_preserves_results(name: str, trans_b: int) -> None:
    proto = _dense(trans_b)
    plain = sofie_root.compile(proto, passes=[])
    with_pass = sofie_root.compile(proto, passes=[name])
    for n in (1, 9):
        x = RNG.standard_normal((n, 7)).astype(np.float32)
        np.testing.assert_allclose(with_pass(x), plain(x), rtol=1e-5, atol=1e-6)


def test_gemm_weights_are_pretransposed() -> None:
    proto = _dense(1)
    default = sofie_root.compile(proto)
    assert "gemm_pretranspose" in DEFAULT
    (gemm,) = [n for n in default.graph.nodes if n.op_type in ("Gemm", "FusedGemm")]
    assert gemm.attrs["transB"] == 0 and default.graph.initializers["w"].shape == (7, 16)
    plain = sofie_root.compile(proto, passes=[])
    assert plain.graph.initializers["w"].shape == (16, 7)


def test_unknown_pass_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown pass"):
        sofie_root.compile(_dense(0), passes=["nope"])
