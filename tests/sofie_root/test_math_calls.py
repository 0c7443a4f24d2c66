"""No transcendental library call in the generated float32 code of any operator.

``std::exp``, ``std::tanh``, ``std::erf``, ``std::log``, ``std::pow`` ... are opaque calls that
neither cling nor g++ vectorise; float32 code must use the runtime's ``sofie_rt::vm`` layer. The
generated C++ (code generation only, nothing is compiled) of a single-node model of every
registered operator, for every ONNX node case with float32 data, with and without the
optimisation passes, and of the fused paths (Gemm/Conv/MatMul + each fusable activation, an
element-wise chain of every fusable operator), must not contain one. Float64 code may keep
``std::`` (through the layer's float64 overloads, which this scan does not see, or directly).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from onnx import helper

from sofie_root.codegen.emitter import generate
from sofie_root.errors import SofieError
from sofie_root.frontends.onnx import convert_model
from sofie_root.ops import REGISTRY
from sofie_root.ops.fused import ACTIVATIONS
from sofie_root.passes import run_passes

from .ort_check import make_model, value_info

#: the functions the vm layer provides (sin, cos and tan are left out: Sin, Cos and Tan nodes call
#: sofie_rt::vm::map_trig, whose library fallback for |x| >= 2^28 is in the runtime, and fused
#: element-wise chains keep std::sin; std::sqrt stays where it is called once per row)
CALL = re.compile(r"std::(exp|expm1|exp2|log|log1p|log2|log10|tanh|erf|erfc|pow|lgamma|tgamma|asin|acos|atan|"
                  r"sinh|cosh|asinh|acosh|atanh)\s*\(")


def _float32_only(case) -> bool:
    inputs, outputs = case.data_sets[0]
    arrays = [np.asarray(a) for a in list(inputs) + list(outputs)]
    kinds = {a.dtype for a in arrays if a.dtype.kind == "f"}
    return kinds == {np.dtype(np.float32)}


def _cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import onnx.backend.test.case.node as node

        cases = node.collect_testcases()
    registered = {(dom, op) for dom, op in REGISTRY if dom in ("", "ai.onnx.preview.training")}
    out = []
    for c in cases:
        if not c.data_sets or not all(("" if n.domain == "ai.onnx" else n.domain, n.op_type) in registered
                                      for n in c.model.graph.node):
            continue
        if any(not isinstance(x, (np.ndarray, np.generic)) for x in [*c.data_sets[0][0], *c.data_sets[0][1]]):
            continue
        if _float32_only(c):
            out.append(c)
    return out


def _calls(graph, passes) -> list[str]:
    src = generate(run_passes(graph, passes), "scan").source
    return sorted({m.group(0) for m in CALL.finditer(src)})


def test_every_float32_node_case_uses_the_math_layer() -> None:
    bad = {}
    scanned = set()
    for case in _cases():
        try:
            graph = convert_model(case.model, case.name, None)
        except SofieError:
            continue  # data-dependent shapes: compiled per input shape, scanned by the fused cases below
        for passes in (None, []):
            calls = _calls(graph, passes)
            if calls:
                bad[f"{case.name} (passes={passes})"] = calls
        scanned.update(n.op_type for n in case.model.graph.node)
    assert not bad, bad
    # the scan saw the operators this is about (a broken case filter would pass vacuously)
    assert {"Exp", "Log", "Tanh", "Erf", "Pow", "Sigmoid", "Softplus", "Elu", "Selu", "Celu", "Gelu", "Mish",
            "Softmax", "LogSoftmax", "LSTM", "GRU", "RNN", "LpPool", "LRN", "Adam", "Asin", "Acos", "Atan",
            "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Sqrt"} <= scanned


@pytest.mark.parametrize(("op", "axes"), [(op, axes) for op in ("ReduceLogSumExp", "ReduceLogSum")
                                           for axes in ([1], [2], [1, 2])]
                         + [(op, [axis]) for op in ("LogSoftmax", "Softmax") for axis in (1, 2)])
def test_float32_reductions(op, axes) -> None:
    # the node cases of the log reductions are float64 only
    if op.endswith("Softmax"):
        node = helper.make_node(op, ["x"], ["y"], axis=axes[0])
        ins = {}
    else:
        node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=0)
        ins = {"axes": np.array(axes, np.int64)}
    model = make_model([node], [value_info("x", np.float32, ["N", 5, 7])], [value_info("y", np.float32, None)],
                       ins, opset=18)
    assert _calls(convert_model(model, op, None), None) == []


@pytest.mark.parametrize("base", ["Gemm", "Conv", "MatMul"])
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_fused_product_epilogues(base, act) -> None:
    attrs = {"Gelu": {"approximate": "tanh"}}.get(act, {})
    rng = np.random.default_rng(0)
    if base == "Conv":
        w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
        x = value_info("x", np.float32, ["N", 3, 8, 8])
    elif base == "Gemm":
        w = rng.standard_normal((6, 4)).astype(np.float32)
        x = value_info("x", np.float32, ["N", 6])
    else:
        w = rng.standard_normal((6, 4)).astype(np.float32)
        x = value_info("x", np.float32, ["N", 5, 6])
    inits = {"w": w}
    act_ins = ["p"]
    if act == "Clip":
        inits.update(lo=np.float32(-1.0), hi=np.float32(2.0))
        act_ins += ["lo", "hi"]
    nodes = [helper.make_node(base, ["x", "w"], ["p"]), helper.make_node(act, act_ins, ["y"], **attrs)]
    model = make_model(nodes, [x], [value_info("y", np.float32, None)], inits, opset=20)
    graph = run_passes(convert_model(model, "fused", None), None)
    assert any(n.op_type.startswith("Fused") for n in graph.nodes), [n.op_type for n in graph.nodes]
    assert _calls(graph, []) == []


def test_fused_elementwise_chain_of_every_fusable_operator() -> None:
    chain = ["Exp", "Log", "Tanh", "Erf", "Sigmoid", "Softplus", "Mish", "Elu", "Selu", "Celu", "Gelu", "Swish",
             "HardSigmoid", "HardSwish", "Relu", "LeakyRelu", "Softsign", "Atan", "Asinh", "Sinh", "Cosh",
             "Sqrt", "Acosh", "Tanh", "Atanh", "Asin", "Acos"]
    nodes, prev = [], "x"
    for k, op in enumerate(chain):
        nodes.append(helper.make_node(op, [prev], [f"t{k}"]))
        prev = f"t{k}"
    for k in range(6):
        nodes.append(helper.make_node("Pow", [prev, f"e{k}"], [f"p{k}"]))
        prev = f"p{k}"
    inits = {f"e{k}": np.float32(e) for k, e in enumerate([2.0, 0.5, -1.0, 3.0, 1.7, -0.5])}
    model = make_model(nodes, [value_info("x", np.float32, ["N", 8])], [value_info(prev, np.float32, None)],
                       inits, opset=20)
    graph = run_passes(convert_model(model, "chain", None), None)
    assert [n.op_type for n in graph.nodes] == ["FusedElementwise"]
    src = generate(graph, "chain").source
    assert CALL.findall(src) == [] and "std::sqrt" not in src
    # the constant exponents stay specialised inside the fused loop
    assert "sofie_rt::vm::pow_half" in src and src.count("sofie_rt::vm::pow(") == 1


@pytest.mark.parametrize(("op", "which"), [("Sin", 0), ("Cos", 1), ("Tan", 2)])
def test_trig_nodes_use_the_vectorised_map(op, which) -> None:
    model = make_model([helper.make_node(op, ["x"], ["y"])], [value_info("x", np.float32, ["N", 8])],
                       [value_info("y", np.float32, None)], {}, opset=20)
    src = generate(run_passes(convert_model(model, op, None), None), op).source
    assert f"sofie_rt::vm::map_trig<{which}>(" in src and f"std::{op.lower()}(" not in src
