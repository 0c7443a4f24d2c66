"""Graph optimisation passes (fold_constants, fold_batchnorm, fuse_gemm_activation,
fuse_conv_activation, fuse_elementwise, eliminate_transposes): each rewrites what it should and
nothing else, and every test model gives the same outputs with all passes, with none and with
each pass alone, equal to onnxruntime."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import sofie_root
from sofie_root.frontends.onnx import convert_model
from sofie_root.ir.dtypes import dtype_from_numpy
from sofie_root.ir.graph import Graph, Node, TensorInfo
from sofie_root.passes import DEFAULT, PASSES, run_passes

from .ort_check import make_model, run_ort, value_info

RTOL, ATOL = 1e-4, 1e-5
NEW_PASSES = ["fold_constants", "fold_batchnorm", "fuse_gemm_activation", "fuse_conv_activation",
              "fuse_elementwise", "eliminate_transposes"]
RNG = np.random.default_rng(5)


def f32(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def bn_params(c: int, prefix: str = "bn") -> dict[str, np.ndarray]:
    return {f"{prefix}_s": (RNG.random(c) + 0.5).astype(np.float32), f"{prefix}_b": f32(c),
            f"{prefix}_m": f32(c), f"{prefix}_v": (RNG.random(c) + 0.5).astype(np.float32)}


def bn_node(x: str, y: str, prefix: str = "bn", **attrs) -> onnx.NodeProto:
    return helper.make_node("BatchNormalization", [x] + [f"{prefix}_{k}" for k in "sbmv"], [y], **attrs)


def ir(proto: onnx.ModelProto) -> Graph:
    return convert_model(proto, "test")


def ops(graph: Graph) -> list[str]:
    return [n.op_type for n in graph.nodes]


def check_all_ways(proto: onnx.ModelProto, *arrays: np.ndarray, passes=None, ref=None) -> dict:
    """Outputs equal onnxruntime (or ``ref``) with no pass, all passes and each pass alone;
    returns the graphs."""
    ref = run_ort(proto, *arrays) if ref is None else ref
    graphs = {}
    for ps in [[], None, *[[p] for p in (passes or NEW_PASSES)]]:
        m = sofie_root.compile(proto, passes=ps)
        got = m.infer(*arrays)
        for g, r in zip(got, ref):
            assert g.shape == r.shape and g.dtype == r.dtype, (ps, g.shape, r.shape)
            np.testing.assert_allclose(g, r, rtol=RTOL, atol=ATOL, err_msg=f"passes={ps}")
        graphs["default" if ps is None else ",".join(ps)] = m.graph
    return graphs


# -- fuse_gemm_activation -----------------------------------------------------------------------

ACTS = [("Relu", {}), ("LeakyRelu", {"alpha": 0.2}), ("Sigmoid", {}), ("Tanh", {}), ("Elu", {"alpha": 0.7}),
        ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("Softplus", {}), ("Selu", {}), ("Clip6", {}),
        ("Gelu", {"approximate": "tanh"}), ("Gelu", {})]


def _act_node(name: str, attrs: dict, x: str, y: str) -> tuple[list, dict, int]:
    if name == "Clip6":
        return [helper.make_node("Clip", [x, "lo", "hi"], [y])], {"lo": np.float32(0), "hi": np.float32(6)}, 17
    return [helper.make_node(name, [x], [y], **attrs)], {}, 20 if name == "Gelu" else 17


@pytest.mark.parametrize("act,attrs", ACTS, ids=[f"{a}{'-' + str(b) if b else ''}" for a, b in ACTS])
def test_matmul_add_activation_becomes_one_fused_gemm(act, attrs) -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["b", "h"], ["h2"])]
    an, inits, opset = _act_node(act, attrs, "h2", "y")
    inits.update({"w": f32(7, 5), "b": f32(5)})
    proto = make_model(nodes + an, [value_info("x", np.float32, ["N", 7])], [value_info("y", np.float32, None)],
                       inits, opset=opset)
    g = PASSES["fuse_gemm_activation"](ir(proto))
    assert ops(g) == ["FusedGemm"]
    assert g.nodes[0].domain == "sofie"
    check_all_ways(proto, f32(3, 7), passes=["fuse_gemm_activation"])


def test_gemm_transb_with_activation() -> None:
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("LeakyRelu", ["h"], ["y"], alpha=0.1)]
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 6])], [value_info("y", np.float32, None)],
                       {"w": f32(4, 6), "b": f32(1, 4)})
    graphs = check_all_ways(proto, f32(5, 6))
    assert ops(graphs["default"]) == ["FusedGemm"]
    assert graphs["default"].nodes[0].attrs["transB"] == 0  # still pre-transposed by gemm_pretranspose


def test_gemm_fusion_not_applied_when_illegal() -> None:
    # the product is also a graph output; the MatMul weight is a run-time input; Clip bounds at run time
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"]), helper.make_node("Relu", ["h"], ["y"]),
             helper.make_node("MatMul", ["y", "w2"], ["m"]), helper.make_node("Add", ["m", "b2"], ["m2"]),
             helper.make_node("Clip", ["m2", "lo", ""], ["z"])]
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 3]), value_info("w2", np.float32, [4, 4]),
                               value_info("lo", np.float32, [])],
                       [value_info("h", np.float32, None), value_info("z", np.float32, None)],
                       {"w": f32(3, 4), "b": f32(4), "b2": f32(4)})
    g = PASSES["fuse_gemm_activation"](ir(proto))
    assert ops(g) == ops(ir(proto))
    check_all_ways(proto, f32(2, 3), f32(4, 4), np.array(-0.5, np.float32))


def test_gemm_shared_intermediate_is_not_fused() -> None:
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Sigmoid", ["h"], ["s"]), helper.make_node("Add", ["r", "s"], ["y"])]
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 3])], [value_info("y", np.float32, None)],
                       {"w": f32(3, 4), "b": f32(4)})
    g = PASSES["fuse_gemm_activation"](ir(proto))
    assert ops(g) == ["Gemm", "Relu", "Sigmoid", "Add"]
    check_all_ways(proto, f32(2, 3))


@pytest.mark.parametrize("tail", ["bias_gelu", "bias", "relu", "none"])
def test_batched_matmul_bias_activation_becomes_fused_matmul(tail: str) -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"])]
    last = "h"
    if tail.startswith("bias"):
        nodes.append(helper.make_node("Add", [last, "b"], ["hb"]))
        last = "hb"
    if tail.endswith("gelu") or tail == "relu":
        nodes.append(helper.make_node("Gelu" if tail.endswith("gelu") else "Relu", [last], ["ha"]))
        last = "ha"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 4, 6])], [value_info("y", np.float32, None)],
                       {"w": f32(6, 5), "b": f32(5)}, opset=20)
    g = PASSES["fuse_gemm_activation"](ir(proto))
    assert ops(g)[0] == ("MatMul" if tail == "none" else "FusedMatMul") and len(g.nodes) == 2
    check_all_ways(proto, f32(3, 4, 6), passes=["fuse_gemm_activation"])


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_fused_matmul_row_blocks_with_remainder(batch: int) -> None:
    # 51 rows per event: 51, 102 and 153 rows are one partial block, a full one plus a partial
    # one, and two full ones plus a partial one (the product runs in blocks of ROW_BLOCK rows)
    from sofie_root.ops.fused import ROW_BLOCK

    assert ROW_BLOCK == 64
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["hb"]),
             helper.make_node("Gelu", ["hb"], ["y"])]
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 51, 24])], [value_info("y", np.float32, None)],
                       {"w": f32(24, 40), "b": f32(40)}, opset=20)
    assert "FusedMatMul" in ops(PASSES["fuse_gemm_activation"](ir(proto)))
    check_all_ways(proto, f32(batch, 51, 24), passes=["fuse_gemm_activation"])


# -- fold_batchnorm and fuse_conv_activation ----------------------------------------------------

@pytest.mark.parametrize("dims,group", [(1, 1), (2, 1), (2, 2), (3, 1)])
def test_conv_batchnorm_relu_becomes_one_fused_conv(dims: int, group: int) -> None:
    c_in, c_out = 4, 6
    spatial = [5] * dims
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["h"], pads=[1] * (2 * dims), group=group),
             bn_node("h", "h2"), helper.make_node("Relu", ["h2"], ["y"])]
    inits = {"w": f32(c_out, c_in // group, *([3] * dims)), "cb": f32(c_out), **bn_params(c_out)}
    proto = make_model(nodes, [value_info("x", np.float32, ["N", c_in, *spatial])],
                       [value_info("y", np.float32, None)], inits)
    g = PASSES["fold_batchnorm"](ir(proto))
    assert ops(g) == ["Conv", "Relu"]
    assert ops(PASSES["fuse_conv_activation"](g)) == ["FusedConv"]
    graphs = check_all_ways(proto, f32(2, c_in, *spatial))
    assert ops(graphs["default"]) == ["FusedConv"]


@pytest.mark.parametrize("act", ["Tanh", "Relu", "Sigmoid", "LeakyRelu", "Clip6"])
@pytest.mark.parametrize("group,bias,hw", [(1, True, (4, 8)), (2, False, (4, 8)), (1, True, (5, 5)), (1, True, (5, 7))])
def test_pointwise_conv_activation_register_tiles(act: str, group: int, bias: bool, hw: tuple) -> None:
    # 8 output channels per group and 32 positions: the register-blocked 1x1 kernel (ops/conv.py
    # _pointwise_tiled; Relu, LeakyRelu and Clip on its vector accumulators, Tanh (vectors, then
    # the last values one by one) and Sigmoid in a pass over each finished block of channels);
    # 25 and 35 positions: a whole tile, one-vector tiles and an overlapping last one; NaN and
    # values beyond tanh's clamp at +-9 included
    c_in, c_out = 6, 8 * group
    node = helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["h"], group=group)
    inits = {"w": f32(c_out, c_in // group, 1, 1), **({"b": f32(c_out)} if bias else {})}
    act_nodes, act_inits, opset = _act_node(act, {"alpha": 0.2} if act == "LeakyRelu" else {}, "h", "y")
    proto = make_model([node, *act_nodes], [value_info("x", np.float32, ["N", c_in, *hw])],
                       [value_info("y", np.float32, None)], {**inits, **act_inits}, opset=opset)
    x = f32(3, c_in, *hw) * 8
    x[1, 2, 3, 4] = np.nan
    graphs = check_all_ways(proto, x, passes=["fuse_conv_activation"])
    assert ops(graphs["default"]) == ["FusedConv"]


@pytest.mark.parametrize("act", ["Tanh", "Relu", "Sigmoid", "LeakyRelu", "Clip6"])
@pytest.mark.parametrize("c_in", [4, 1])
def test_conv3x3_activation_register_tiles(act: str, c_in: int) -> None:
    # 3x3 over 4 channels (or 1: 9 terms, the register-blocked kernel from 4 output channels on,
    # not the stencil of _direct_conv), 8 outputs, rows of 20: the register-blocked direct kernel
    # (ops/conv.py _direct_tiled; Relu, LeakyRelu and Clip on its vector accumulators, Tanh and
    # Sigmoid in a pass over each finished block of channels, all in the overlapping last tile);
    # NaN included
    node = helper.make_node("Conv", ["x", "w", "b"], ["h"], pads=[1, 1, 1, 1])
    act_nodes, act_inits, opset = _act_node(act, {"alpha": 0.2} if act == "LeakyRelu" else {}, "h", "y")
    proto = make_model([node, *act_nodes], [value_info("x", np.float32, ["N", c_in, 5, 20])],
                       [value_info("y", np.float32, None)], {"w": f32(8, c_in, 3, 3), "b": f32(8), **act_inits},
                       opset=opset)
    x = f32(2, c_in, 5, 20) * 8
    x[1, c_in - 1, 3, 4] = np.nan
    graphs = check_all_ways(proto, x, passes=["fuse_conv_activation"])
    assert ops(graphs["default"]) == ["FusedConv"]


def test_conv_bias_add_batchnorm() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "c"], ["h1"]),
             bn_node("h1", "h2"), helper.make_node("Clip", ["h2", "lo", "hi"], ["y"])]
    inits = {"w": f32(3, 2, 3, 3), "c": f32(1, 3, 1, 1), "lo": np.float32(0), "hi": np.float32(1), **bn_params(3)}
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 2, 6, 6])], [value_info("y", np.float32, None)],
                       inits)
    graphs = check_all_ways(proto, f32(2, 2, 6, 6))
    assert ops(graphs["fold_batchnorm"]) == ["Conv", "Clip"]
    assert ops(graphs["default"]) == ["FusedConv"]


@pytest.mark.parametrize("kind", ["gemm", "gemm_transb", "matmul_add"])
def test_dense_batchnorm_is_folded(kind: str) -> None:
    if kind == "matmul_add":
        nodes = [helper.make_node("MatMul", ["x", "w"], ["h0"]), helper.make_node("Add", ["h0", "c"], ["h"])]
        inits = {"w": f32(5, 4), "c": f32(4)}
    else:
        tb = int(kind == "gemm_transb")
        nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["h"], transB=tb, beta=0.5)]
        inits = {"w": f32(4, 5) if tb else f32(5, 4), "c": f32(4)}
    nodes += [bn_node("h", "y")]
    inits.update(bn_params(4))
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 5])], [value_info("y", np.float32, None)], inits)
    graphs = check_all_ways(proto, f32(3, 5))
    assert ops(graphs["fold_batchnorm"]) == ["Gemm"]


def test_batchnorm_not_folded_when_illegal() -> None:
    # the Conv output is a graph output; a second BN has run-time parameters; a third follows a Relu
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"]), bn_node("h", "y1"),
             helper.make_node("Conv", ["x", "w"], ["k"]),
             helper.make_node("BatchNormalization", ["k", "rs", "bn_b", "bn_m", "bn_v"], ["y2"]),
             helper.make_node("Relu", ["x"], ["r"]), bn_node("r", "y3", "bn2")]
    inits = {"w": f32(2, 2, 1, 1), **bn_params(2), **bn_params(2, "bn2")}
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 2, 3, 3]), value_info("rs", np.float32, [2])],
                       [value_info(n, np.float32, None) for n in ("h", "y1", "y2", "y3")], inits)
    g = PASSES["fold_batchnorm"](ir(proto))
    assert ops(g).count("BatchNormalization") == 3
    check_all_ways(proto, f32(2, 2, 3, 3), (RNG.random(2) + 0.5).astype(np.float32))


def test_conv_activation_with_unsupported_attribute_stays_separate() -> None:
    # Gelu approximate="erf" is not ONNX: the compiler refuses it either way, so test an activation
    # the fused node does not take (PRelu with a slope tensor) instead
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"]), helper.make_node("PRelu", ["h", "slope"], ["y"])]
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 2, 4, 4])], [value_info("y", np.float32, None)],
                       {"w": f32(3, 2, 3, 3), "slope": f32(3, 1, 1)})
    assert ops(PASSES["fuse_conv_activation"](ir(proto))) == ["Conv", "PRelu"]
    check_all_ways(proto, f32(2, 2, 4, 4))


# -- fuse_elementwise ----------------------------------------------------------------------------

def test_elementwise_chain_becomes_one_loop() -> None:
    nodes = [helper.make_node("Sigmoid", ["x"], ["a"]), helper.make_node("Mul", ["x", "a"], ["b"]),
             helper.make_node("Add", ["b", "c"], ["d"]), helper.make_node("LeakyRelu", ["d"], ["e"], alpha=0.3),
             helper.make_node("Greater", ["e", "z"], ["f"]), helper.make_node("Where", ["f", "e", "x"], ["g"]),
             helper.make_node("Clip", ["g", "lo", ""], ["h"]),
             helper.make_node("Cast", ["h"], ["i"], to=TensorProto.DOUBLE), helper.make_node("Exp", ["i"], ["y"])]
    inits = {"c": f32(1, 5), "z": np.float32(0.1), "lo": np.float32(-0.5)}
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 3, 5])], [value_info("y", np.float64, None)],
                       inits)
    g = PASSES["fuse_elementwise"](ir(proto))
    # e is read twice (Greater and Where), so the chain splits there
    assert ops(g) == ["FusedElementwise", "FusedElementwise"]
    steps = json.loads(g.nodes[0].attrs["steps"])
    assert [s["op"] for s in steps] == ["Sigmoid", "Mul", "Add", "LeakyRelu"]
    check_all_ways(proto, f32(4, 3, 5))


def test_elementwise_not_fused_across_shape_changes_or_outputs() -> None:
    # a [N, 1] intermediate broadcast into [N, 4]: different index spaces; t is a graph output
    nodes = [helper.make_node("Exp", ["s"], ["e"]), helper.make_node("Mul", ["x", "e"], ["t"]),
             helper.make_node("Tanh", ["t"], ["y"])]
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 4]), value_info("s", np.float32, ["N", 1])],
                       [value_info("t", np.float32, None), value_info("y", np.float32, None)])
    g = PASSES["fuse_elementwise"](ir(proto))
    assert ops(g) == ["Exp", "Mul", "Tanh"]
    check_all_ways(proto, f32(3, 4), f32(3, 1))


def test_old_clip_and_integer_ops_fuse() -> None:
    nodes = [helper.make_node("Clip", ["x"], ["a"], min=-1.0, max=0.5), helper.make_node("Neg", ["a"], ["b"]),
             helper.make_node("Cast", ["b"], ["c"], to=TensorProto.INT32), helper.make_node("Abs", ["c"], ["y"])]
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 6])], [value_info("y", np.int32, None)],
                       opset=6)
    g = PASSES["fuse_elementwise"](ir(proto))
    assert ops(g) == ["FusedElementwise"]
    x = (f32(3, 6) * 3).astype(np.float32)
    m = sofie_root.compile(g, passes=[])
    np.testing.assert_array_equal(m(x), np.abs(-np.clip(x, -1, 0.5)).astype(np.int32))


def test_bad_fused_steps_are_refused() -> None:
    x = TensorInfo("x", dtype_from_numpy(np.dtype("float32")), (2,))
    y = TensorInfo("y", x.dtype, (2,))
    for steps in ["not json", json.dumps([{"op": "System", "in": [["x", 0]], "dtype": "float32"}]),
                  json.dumps([{"op": "Relu", "in": [["s", 0]], "dtype": "float32"}]),
                  json.dumps([{"op": "Relu", "in": [["x", 0]], "dtype": "float32); abort(); //"}]),
                  json.dumps([{"op": "LeakyRelu", "in": [["x", 0]], "dtype": "float32",
                               "attrs": {"alpha": "1); abort(); //"}}])]:
        node = Node("FusedElementwise", ["x"], ["y"], {"steps": steps}, "evil", "sofie", 17)
        g = Graph([node], ["x"], ["y"], {"x": x, "y": y})
        with pytest.raises(sofie_root.SofieError, match="evil"):
            sofie_root.compile(g, passes=[])
    node = Node("FusedGemm", ["x"], ["y"], {"activation": "system"}, "evil2", "sofie", 17)
    with pytest.raises(sofie_root.SofieError, match="evil2"):
        sofie_root.compile(Graph([node], ["x"], ["y"], {"x": x, "y": y}), passes=[])


# -- eliminate_transposes and fold_constants -------------------------------------------------------

def test_transposes_cancel_around_elementwise_and_fold_into_gemm() -> None:
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Add", ["b", "c"], ["d"]), helper.make_node("Transpose", ["d"], ["e"], perm=[0, 3, 1, 2]),
             helper.make_node("Reshape", ["e", "shp"], ["f"]), helper.make_node("Reshape", ["f", "shp2"], ["f2"]),
             helper.make_node("Transpose", ["f2"], ["g"], perm=[1, 0]),
             helper.make_node("Gemm", ["g", "w"], ["h"], transA=1),
             helper.make_node("Transpose", ["h"], ["h1"], perm=[1, 0]),
             helper.make_node("Transpose", ["h1"], ["y"], perm=[1, 0])]
    inits = {"c": f32(3), "shp": np.array([0, 3, 20], np.int64), "shp2": np.array([-1, 60], np.int64),
             "w": f32(60, 5)}
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 3, 4, 5])], [value_info("y", np.float32, None)],
                       inits)
    g = PASSES["eliminate_transposes"](ir(proto))
    assert ops(g) == ["Relu", "Add", "Reshape", "Gemm"]
    assert g.nodes[-1].attrs.get("transA", 0) == 0 and g.outputs == ["y"]
    check_all_ways(proto, f32(2, 3, 4, 5))


def test_pointwise_convs_between_transposes_become_matmuls() -> None:
    # torch's Conv1d over particles stored [N, P, C]: x.transpose(1, 2) -> conv -> relu -> conv -> back
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 1]),
             helper.make_node("Conv", ["a", "w1", "b1"], ["c1"], kernel_shape=[1]),
             helper.make_node("Relu", ["c1"], ["r1"]), helper.make_node("Conv", ["r1", "w2"], ["c2"]),
             helper.make_node("Mul", ["c2", "k"], ["m"]), helper.make_node("Transpose", ["m"], ["y"], perm=[0, 2, 1])]
    inits = {"w1": f32(8, 5, 1), "b1": f32(8), "w2": f32(4, 8, 1), "k": f32(4, 1)}
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 7, 5])], [value_info("y", np.float32, None)],
                       inits)
    g = PASSES["eliminate_transposes"](ir(proto))
    assert "Transpose" not in ops(g) and "Conv" not in ops(g)
    graphs = check_all_ways(proto, f32(3, 7, 5))
    assert ops(graphs["default"]) == ["FusedMatMul", "MatMul", "FusedElementwise"] or \
        ops(graphs["default"]) == ["FusedMatMul", "MatMul", "Mul"]


@pytest.mark.parametrize("case", ["strided", "shared"])
def test_conv_after_transpose_left_alone(case: str) -> None:
    # a strided 1x1 Conv is no MatMul; a Transpose also read elsewhere would only be duplicated
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["a", "w"], ["y"], strides=[2, 2] if case == "strided" else [1, 1])]
    outs = [value_info("y", np.float32, None)]
    if case == "shared":
        nodes.append(helper.make_node("Relu", ["a"], ["z"]))
        outs.append(value_info("z", np.float32, None))
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 4, 4, 3])], outs, {"w": f32(2, 3, 1, 1)})
    assert ops(PASSES["eliminate_transposes"](ir(proto)))[:2] == ["Transpose", "Conv"]
    check_all_ways(proto, f32(2, 4, 4, 3), passes=["eliminate_transposes"])


def test_transpose_of_graph_output_and_shared_transpose_stay_correct() -> None:
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[1, 0]), helper.make_node("Exp", ["a"], ["b"]),
             helper.make_node("Transpose", ["b"], ["y"], perm=[1, 0]), helper.make_node("Neg", ["a"], ["z"])]
    proto = make_model(nodes, [value_info("x", np.float32, [3, 4])],
                       [value_info("y", np.float32, None), value_info("z", np.float32, None)])
    check_all_ways(proto, f32(3, 4))


def test_fold_constants_refolds_what_passes_expose() -> None:
    f = dtype_from_numpy(np.dtype("float32"))
    w = f32(4, 3)
    nodes = [Node("Transpose", ["w"], ["wt"], {"perm": [1, 0]}, opset=17), Node("Mul", ["wt", "two"], ["w2"], opset=17),
             Node("MatMul", ["x", "w2"], ["y"], opset=17)]
    tensors = {"x": TensorInfo("x", f, (2, 3)), "w": TensorInfo("w", f, (4, 3)), "two": TensorInfo("two", f, ()),
               "wt": TensorInfo("wt", f, (3, 4)), "w2": TensorInfo("w2", f, (3, 4)), "y": TensorInfo("y", f, (2, 4))}
    g = Graph(nodes, ["x"], ["y"], tensors, {"w": w, "two": np.array(2, np.float32)}, {"": 17})
    folded = PASSES["fold_constants"](g)
    assert ops(folded) == ["MatMul"]
    np.testing.assert_array_equal(folded.initializers["w2"], w.T * 2)
    x = f32(2, 3)
    for ps in ([], ["fold_constants"], None):
        np.testing.assert_allclose(sofie_root.compile(g, passes=ps)(x), x @ (w.T * 2), rtol=RTOL, atol=ATOL)


# -- whole models ----------------------------------------------------------------------------------

def _torch_models():
    import torch

    from benchmarks import hep_models

    from .test_frontend_torch import EdgeConv, Encoder

    nn = torch.nn
    out = {}
    for name in ("dense", "jet", "cnn"):
        out[name] = (hep_models.build(name), hep_models.inputs(name, 3, np.random.default_rng(0)))
    torch.manual_seed(2)
    out["torch_cnn"] = (nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 6, 3), nn.ELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(6, 3)).eval(), (f32(2, 1, 10, 10),))
    out["torch_mlp_bn"] = (nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Hardtanh(0, 6), nn.Linear(8, 8),
                                         nn.SiLU(), nn.Linear(8, 2), nn.Tanh()).eval(), (f32(3, 5),))
    out["edgeconv"] = (EdgeConv().eval(), (f32(2, 6, 2), f32(2, 6, 4)))
    out["encoder"] = (Encoder().eval(), (f32(2, 5, 16),))
    for mod, _ in out.values():
        for m in mod.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.num_features) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features) + 0.5)
    return out


@pytest.fixture(scope="module")
def torch_models(tmp_path_factory):
    import torch

    from sofie_root.frontends.torch import torch_to_onnx

    protos = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (mod, xs) in _torch_models().items():
            # the benchmark models as the benchmarks export them (dynamo); the others through the
            # TorchScript exporter, which is faster and leaves BatchNorm and Gemm(transB=1) unfolded
            exporter = "dynamo" if name in ("dense", "jet", "cnn") else "torchscript"
            protos[name] = (torch_to_onnx(mod, tuple(torch.from_numpy(x) for x in xs), exporter=exporter), xs)
    return protos


@pytest.mark.parametrize("name", ["dense", "jet", "cnn", "torch_cnn", "torch_mlp_bn", "edgeconv", "encoder"])
def test_torch_models_same_with_and_without_passes(torch_models, name) -> None:
    proto, xs = torch_models[name]
    graphs = check_all_ways(proto, *xs)
    assert len(graphs["default"].nodes) <= len(graphs[""].nodes)
    if name in ("dense", "cnn", "torch_cnn", "torch_mlp_bn"):
        assert len(graphs["default"].nodes) < len(graphs[""].nodes)


def test_keras_channels_last_model_same_with_and_without_passes() -> None:
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    from sofie_root.frontends.keras import keras_to_onnx

    from .test_frontend_keras import _randomize_bn

    L = keras.layers
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8, 8, 2)), L.Conv2D(4, 3, padding="same"), L.BatchNormalization(),
                              L.Activation("relu"), L.Permute((3, 1, 2)), L.Activation("tanh"), L.Permute((2, 3, 1)),
                              L.Conv2D(3, 1, activation="sigmoid"), L.Flatten(), L.Dense(6), L.BatchNormalization(),
                              L.Activation("elu"), L.Dense(2, activation="softmax")])
    _randomize_bn(model)
    proto = keras_to_onnx(model)
    x = f32(3, 8, 8, 2)
    graphs = check_all_ways(proto, x, ref=[np.asarray(model(x).detach())])  # Keras itself is the reference
    assert len(graphs["default"].nodes) < len(graphs[""].nodes)


def test_fused_model_save_load_round_trip_and_idempotence(torch_models, tmp_path) -> None:
    proto, xs = torch_models["cnn"]
    m = sofie_root.compile(proto)
    fused = {n.op_type for n in m.graph.nodes if n.domain == "sofie"}
    assert "FusedConv" in fused and "FusedGemm" in fused
    # running the passes again on an optimised graph changes nothing
    assert str(run_passes(m.graph)) == str(m.graph)
    for name in DEFAULT:
        assert str(PASSES[name](m.graph)) == str(m.graph), name
    path = tmp_path / "fused.root"
    m.save(path)
    loaded = sofie_root.load(path)
    assert str(loaded.graph) == str(m.graph)
    for a, b in zip(loaded.infer(*xs), m.infer(*xs)):
        np.testing.assert_array_equal(a, b)
    plain = sofie_root.load(path, passes=[])
    np.testing.assert_array_equal(plain.infer(*xs)[0], m.infer(*xs)[0])


def test_elementwise_fused_model_round_trip(tmp_path) -> None:
    nodes = [helper.make_node("Sigmoid", ["x"], ["a"]), helper.make_node("Mul", ["x", "a"], ["b"]),
             helper.make_node("Sub", ["b", "c"], ["y"])]
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 4])], [value_info("y", np.float32, None)],
                       {"c": f32(4)})
    m = sofie_root.compile(proto)
    assert ops(m.graph) == ["FusedElementwise"]
    m.save(tmp_path / "ew.root")
    loaded = sofie_root.load(tmp_path / "ew.root")
    x = f32(5, 4)
    np.testing.assert_array_equal(loaded(x), m(x))
    np.testing.assert_allclose(m(x), run_ort(proto, x)[0], rtol=RTOL, atol=ATOL)
