"""Every model round-trips through .root: saved to a file, loaded back, the same graph and
bit-identical weights and outputs.

Every model the suite compiles already goes through the format in memory (``tests/roundtrip_check.py``,
wired in ``tests/conftest.py``: graph, weights, generated C++ compared without recompiling). Here a
representative subset takes the whole path through a real file and a second compilation: a
sample of the ONNX node cases across operator families, a custom operator, a torch ParticleNet
block, and the ConstantOfShape model of issue 11 that was saved but could not be loaded.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx import helper

import sofie_root
from sofie_root.model import SpecializingModel
from tests.sofie_root.ort_check import make_model, value_info

from .helpers import assert_bits_equal, assert_graphs_equal


def _round_trip(model: sofie_root.Model, path, *arrays) -> sofie_root.Model:
    model.save(path, "m", overwrite=True)
    loaded = sofie_root.load(f"{path}:m")
    assert_graphs_equal(model.graph, loaded.graph)
    assert loaded.source == model.source
    outs_a, outs_b = model.infer(*arrays), loaded.infer(*arrays)
    assert len(outs_a) == len(outs_b)
    for k, (a, b) in enumerate(zip(outs_a, outs_b)):
        assert_bits_equal(a, b, f"output {k}")
    return loaded


def test_constant_of_shape_folded_into_an_initializer(tmp_path) -> None:
    # issue 11: ConstantOfShape of a constant shape became an initializer that kept the
    # compile-time value of the node's output; the file was written and load() refused it
    nodes = [helper.make_node("ConstantOfShape", ["shp"], ["c"],
                              value=helper.make_tensor("v", 7, [1], [2])),
             helper.make_node("Add", ["x", "c"], ["y"])]
    proto = make_model(nodes, [value_info("x", np.int64, [3])], [value_info("y", np.int64, [3])],
                       {"shp": np.array([3])})
    for passes in (None, []):
        model = sofie_root.compile(proto, passes=passes)
        assert all(model.graph.tensors[n].value is None for n in model.graph.initializers)
        loaded = _round_trip(model, tmp_path / "cos.root", np.arange(3))
        np.testing.assert_array_equal(loaded(np.arange(3)), np.arange(3) + 2)  # numpy reference


def test_writer_refuses_what_the_reader_would_reject(tmp_path, monkeypatch) -> None:
    from sofie_root.serialization import schema

    model = sofie_root.compile(make_model([helper.make_node("Relu", ["x"], ["y"])],
                                          [value_info("x", np.float32, [2])], [value_info("y", np.float32, [2])]))
    original = schema.encode_graph

    def bad(graph, builder, placed=None):  # a writer bug: a tensor stored with the wrong shape
        doc = original(graph, builder, placed=placed)
        doc["tensors"] = [dict(t, shape=[3]) if t["name"] == "y" else t for t in doc["tensors"]]
        return doc

    monkeypatch.setattr("sofie_root.serialization.writer.encode_graph", bad)
    path = tmp_path / "bad.root"
    with pytest.raises(sofie_root.SofieError, match="refusing to write a model the reader would reject"):
        model.save(path)
    assert not path.exists()
    monkeypatch.undo()
    model.save(path)
    assert_graphs_equal(sofie_root.load(path).graph, model.graph)


def _node_cases(every: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import onnx.backend.test.case.node as node

        cases = node.collect_testcases()
    from tests.sofie_root.test_node_conformance import _cases, _exclusions

    runnable = {p.id for p in _cases()} - set(_exclusions())
    picked = [c for c in cases if c.name in runnable]
    return [pytest.param(c, id=c.name) for c in picked[::every]]


@pytest.mark.parametrize("case", _node_cases(every=120))
def test_node_cases_through_a_file(case, tmp_path) -> None:
    inputs = [np.asarray(x) for x in case.data_sets[0][0]]
    model = sofie_root.compile(case.model)
    if isinstance(model, SpecializingModel):
        # compiled per value of a shape input at run time: there is no single graph to store
        with pytest.raises(sofie_root.SofieError, match="cannot be saved"):
            model.save(tmp_path / "case.root")
        return
    _round_trip(model, tmp_path / "case.root", *inputs)


def test_custom_operator_model(tmp_path) -> None:
    dom = "test.roundtrip"
    sofie_root.register_operator("Softsign2", domain=dom, elementwise="x / (1 + std::abs(x))")
    try:
        proto = make_model([helper.make_node("Relu", ["x"], ["r"]),
                            helper.make_node("Softsign2", ["r"], ["y"], domain=dom)],
                           [value_info("x", np.float32, ["N", 4])], [value_info("y", np.float32, None)])
        proto.opset_import.append(helper.make_opsetid(dom, 1))
        model = sofie_root.compile(proto)
        x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
        loaded = _round_trip(model, tmp_path / "custom.root", x)
        r = np.maximum(x, 0)
        np.testing.assert_allclose(loaded(x), r / (1 + np.abs(r)), rtol=1e-6)  # numpy reference
    finally:
        sofie_root.unregister_operator("Softsign2", dom)


def test_torch_particlenet_block(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from tests.sofie_root.test_frontend_torch import EdgeConv

    torch.manual_seed(3)
    module = EdgeConv().eval()
    model = sofie_root.compile(module, example_inputs=(torch.randn(2, 10, 2), torch.randn(2, 10, 4)))
    xs = [torch.randn(4, 10, 2), torch.randn(4, 10, 4)]
    loaded = _round_trip(model, tmp_path / "edgeconv.root", *[x.numpy() for x in xs])
    with torch.no_grad():
        np.testing.assert_allclose(loaded(*[x.numpy() for x in xs]), module(*xs).numpy(), rtol=1e-4, atol=1e-5)
