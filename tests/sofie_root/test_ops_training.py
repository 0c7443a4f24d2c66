"""Optimizer operators of the ai.onnx.preview.training domain (Adagrad, Adam, Momentum) against
onnx.reference (onnxruntime's standard build does not implement the training domain): several
tensors per node, ranks 1-3, a symbolic batch dimension at two sizes, T = 0 and T > 0, float and
double, every attribute; and the refusals (attributes by the audit, shapes by the operator)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import sofie_root
from sofie_root.errors import SofieError, SofieWarning

from .ort_check import run_reference, value_info

DOMAIN = "ai.onnx.preview.training"
STATES = {"Adagrad": ["H"], "Momentum": ["V"], "Adam": ["V", "H"]}


def _model(op: str, shapes, dtype=np.float32, r_dtype=None, inits=None, outputs=None, **attrs) -> onnx.ModelProto:
    n = len(shapes)
    groups = ["X", "G", *STATES[op]]
    ins = ["R", "T"] + [f"{g}{i}" for g in groups for i in range(n)]
    outs = outputs if outputs is not None else [f"{g}{i}_new" for g in ["X", *STATES[op]] for i in range(n)]
    node = helper.make_node(op, ins, outs, domain=DOMAIN, name="opt", **attrs)
    vis = [value_info("R", r_dtype or dtype, []), value_info("T", np.int64, [])]
    vis += [value_info(f"{g}{i}", dtype, shapes[i]) for g in groups for i in range(n)]
    inits = inits or {}
    graph = helper.make_graph([node], "opt", [v for v in vis if v.name not in inits],
                              [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None)
                               for o in outs if o],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                             ir_version=9)


def _inputs(op, shapes, rng, dtype=np.float32, t=3, r=0.1):
    arrays = [np.asarray(r, dtype), np.asarray(t, np.int64)]
    for g in ["X", "G", *STATES[op]]:
        for s in shapes:
            a = rng.normal(size=s)
            if g == "H":
                a = np.abs(a)  # accumulated squares are non-negative
            arrays.append(a.astype(dtype))
    return arrays


def _compare(model, arrays, rtol=1e-5, atol=1e-6, compiled=None):
    m = compiled or sofie_root.compile(model)
    got = m.infer(*arrays)
    ref = run_reference(model, *arrays)
    assert len(got) == len(ref)
    for k, (g, r) in enumerate(zip(got, ref)):
        assert g.shape == r.shape, f"output {k}"
        assert g.dtype == arrays[2].dtype, f"output {k}"
        np.testing.assert_allclose(g, r.astype(g.dtype), rtol=rtol, atol=atol, err_msg=f"output {k}")
    return m


ATTRS = {
    "Adagrad": [{}, {"decay_factor": 0.25, "epsilon": 1e-3, "norm_coefficient": 0.05}],
    "Adam": [{}, {"alpha": 0.8, "beta": 0.7, "epsilon": 1e-4, "norm_coefficient": 0.02, "norm_coefficient_post": 0.1}],
    "Momentum": [{"alpha": 0.9, "beta": 0.5, "mode": "standard", "norm_coefficient": 0.01},
                 {"alpha": 0.8, "beta": 0.3, "mode": "nesterov", "norm_coefficient": 0.1}],
}


@pytest.mark.parametrize("variant", [0, 1])
@pytest.mark.parametrize("t", [0, 1, 7])
@pytest.mark.parametrize("op", ["Adagrad", "Adam", "Momentum"])
def test_optimizer_vs_reference(op, t, variant) -> None:
    rng = np.random.default_rng(t + 10 * variant)
    shapes = [[3, 4], [5], [2, 3, 2]]
    model = _model(op, shapes, **ATTRS[op][variant])
    _compare(model, _inputs(op, shapes, rng, t=t, r=0.05 + 0.1 * variant))


@pytest.mark.parametrize("op", ["Adagrad", "Adam", "Momentum"])
def test_optimizer_double_and_symbolic_batch(op) -> None:
    rng = np.random.default_rng(5)
    model = _model(op, [["N", 3], ["N"]], dtype=np.float64, **ATTRS[op][1])
    # (onnx.reference's Adam rounds its outputs to float32 when it updates several tensors)
    rtol = 1e-6 if op == "Adam" else 1e-12
    m = None
    for n in (1, 6):
        m = _compare(model, _inputs(op, [[n, 3], [n]], rng, dtype=np.float64, t=4), rtol=rtol, atol=1e-14,
                     compiled=m)


@pytest.mark.parametrize("op", ["Adagrad", "Adam", "Momentum"])
def test_optimizer_double_rate_float_tensors(op) -> None:
    rng = np.random.default_rng(6)
    model = _model(op, [[7]], r_dtype=np.float64, **ATTRS[op][1])
    arrays = _inputs(op, [[7]], rng, t=2)
    arrays[0] = np.asarray(0.3, np.float64)
    _compare(model, arrays)


def test_constant_step_and_rate() -> None:
    """R and T as initializers (a model applying one fixed step): the same update."""
    rng = np.random.default_rng(8)
    shapes = [[4, 2]]
    arrays = _inputs("Adam", shapes, rng, t=5)
    ref = run_reference(_model("Adam", shapes, **ATTRS["Adam"][1]), *arrays)
    model = _model("Adam", shapes, inits={"R": arrays[0], "T": arrays[1]}, **ATTRS["Adam"][1])
    got = sofie_root.compile(model).infer(*arrays[2:])
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r.astype(np.float32), rtol=1e-5, atol=1e-6)


def test_unwanted_outputs_are_skipped() -> None:
    rng = np.random.default_rng(9)
    shapes = [[3], [2]]
    arrays = _inputs("Momentum", shapes, rng)
    full = run_reference(_model("Momentum", shapes, **ATTRS["Momentum"][0]), *arrays)
    model = _model("Momentum", shapes, outputs=["X0_new", "X1_new", "", ""], **ATTRS["Momentum"][0])
    got = sofie_root.compile(model).infer(*arrays)
    assert len(got) == 2
    for g, r in zip(got, full[:2]):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_nan_propagates() -> None:
    shapes = [[4]]
    arrays = _inputs("Adagrad", shapes, np.random.default_rng(1))
    arrays[2][1] = np.nan  # X
    arrays[3][2] = np.inf  # G
    model = _model("Adagrad", shapes)
    got = sofie_root.compile(model).infer(*arrays)
    with np.errstate(all="ignore"):  # inf / inf in the reference
        ref = run_reference(model, *arrays)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-5, equal_nan=True)
    assert np.isnan(got[0][1:3]).all() and np.isnan(got[1][1]) and np.isinf(got[1][2])


def test_shape_mismatch_names_the_node() -> None:
    model = _model("Adagrad", [[3]])
    model.graph.input[3].CopyFrom(value_info("G0", np.float32, [4]))
    with pytest.raises(SofieError, match=r"opt.*must have the shape of X"):
        sofie_root.compile(model)


def test_wrong_input_count_is_refused() -> None:
    model = _model("Adam", [[3]])
    del model.graph.node[0].input[-1]
    with pytest.raises(SofieError, match="opt"):
        sofie_root.compile(model)


def test_non_scalar_rate_is_refused() -> None:
    model = _model("Momentum", [[3]], **ATTRS["Momentum"][0])
    model.graph.input[0].CopyFrom(value_info("R", np.float32, [2]))
    with pytest.raises(SofieError, match="R must be a scalar"):
        sofie_root.compile(model)


def test_missing_required_attribute_is_refused() -> None:
    attrs = dict(ATTRS["Momentum"][0])
    del attrs["mode"]
    with pytest.raises(SofieError, match="required attribute 'mode'"):
        sofie_root.compile(_model("Momentum", [[3]], **attrs))


def test_bad_mode_is_refused() -> None:
    attrs = dict(ATTRS["Momentum"][0], mode="heavy-ball")
    with pytest.raises(SofieError, match="mode must be"):
        sofie_root.compile(_model("Momentum", [[3]], **attrs))


def test_attribute_of_wrong_type_is_refused() -> None:
    model = _model("Adagrad", [[3]])
    model.graph.node[0].attribute.append(helper.make_attribute("epsilon", "tiny"))
    with pytest.raises(SofieError, match="epsilon"):
        sofie_root.compile(model)


def test_unknown_attribute_warns() -> None:
    model = _model("Adam", [[3]], beta1=0.5)
    with pytest.warns(SofieWarning, match="beta1"):
        sofie_root.compile(model)


def test_integer_tensors_are_refused() -> None:
    model = _model("Adagrad", [[3]], dtype=np.int64, r_dtype=np.float32)
    with pytest.raises(SofieError, match="float"):
        sofie_root.compile(model)
