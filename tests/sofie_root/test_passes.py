"""Graph passes: each is switchable and gives the same results (within float tolerance) as the
graph without it."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root
from sofie_root.passes import DEFAULT, PASSES

from .ort_check import make_model, run_ort, value_info

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


def _mixed() -> object:
    """A graph every pass has something to do in: Transposes, Conv + BatchNorm, bias Adds, chains."""
    c = 3
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["xt", "w"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["h", "s", "b", "m", "v"], ["h2"]),
             helper.make_node("Relu", ["h2"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("MatMul", ["f", "w2"], ["g"]), helper.make_node("Add", ["g", "b2"], ["g2"]),
             helper.make_node("Sigmoid", ["g2"], ["s1"]), helper.make_node("Mul", ["s1", "g2"], ["s2"]),
             helper.make_node("Neg", ["s2"], ["y"])]
    inits = {"w": RNG.standard_normal((c, 2, 3, 3)).astype(np.float32),
             "s": (RNG.random(c) + 0.5).astype(np.float32), "b": RNG.standard_normal(c).astype(np.float32),
             "m": RNG.standard_normal(c).astype(np.float32), "v": (RNG.random(c) + 0.5).astype(np.float32),
             "w2": RNG.standard_normal((c * 16, 5)).astype(np.float32), "b2": RNG.standard_normal(5).astype(np.float32)}
    return make_model(nodes, [value_info("x", np.float32, ["N", 4, 4, 2])], [value_info("y", np.float32, None)], inits)


@pytest.mark.parametrize("name", sorted(PASSES))
def test_passes_are_pure_and_idempotent(name: str) -> None:
    from sofie_root.frontends.onnx import convert_model

    graph = convert_model(_mixed(), "mixed")
    before = str(graph)
    weights = {k: v.copy() for k, v in graph.initializers.items()}
    once = PASSES[name](graph)
    assert str(graph) == before  # the input graph is not modified
    assert set(graph.initializers) == set(weights)
    for k, v in weights.items():
        np.testing.assert_array_equal(graph.initializers[k], v)
    assert str(PASSES[name](once)) == str(once)  # a second run finds nothing left to do


def test_default_pipeline_fuses_the_mixed_graph() -> None:
    proto = _mixed()
    default = sofie_root.compile(proto)
    plain = sofie_root.compile(proto, passes=[])
    # g2 feeds both Sigmoid and Mul (a SiLU), so the Gemm keeps its output and the SiLU + Neg fuse
    assert [n.op_type for n in default.graph.nodes] == ["Transpose", "FusedConv", "Flatten", "Gemm",
                                                        "FusedElementwise"]
    assert len(plain.graph.nodes) == 10
    for n in (1, 6):
        x = RNG.standard_normal((n, 4, 4, 2)).astype(np.float32)
        np.testing.assert_allclose(default(x), plain(x), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(default(x), run_ort(proto, x)[0], rtol=1e-4, atol=1e-5)
