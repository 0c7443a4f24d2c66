"""Deep graphs: long element-wise chains compile (fused or not) and give onnxruntime's results.

Issue 11: an 8,000-node chain crashed cling and 1,000 unfused nodes did not compile in 300 s
(one huge ``run`` function; a quadratic topological sort). ``benchmarks/compile_time.py``
measures the curve; these tests keep the mechanisms working on small sizes.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root
from benchmarks.compile_time import chain_model
from sofie_root.codegen import emitter
from sofie_root.frontends.onnx import convert_model
from sofie_root.passes.fuse_elementwise import MAX_GROUP
from tests.sofie_root.ort_check import make_model, run_ort, value_info


def _check(model, proto) -> None:
    for batch in (1, 6):
        x = np.random.default_rng(batch).uniform(-2, 2, (batch, 16)).astype(np.float32)
        np.testing.assert_allclose(model(x), run_ort(proto, x)[0], rtol=1e-5, atol=1e-6)


def test_unfused_chain_is_split_into_member_functions(monkeypatch) -> None:
    monkeypatch.setattr(emitter, "PART_NODES", 8)
    proto = chain_model(43)
    model = sofie_root.compile(proto, passes=[])
    assert len(model.graph.nodes) == 43
    parts = [f"part{j}(" for j in range(6)]
    assert all(p in model.source for p in parts) and "part6(" not in model.source  # 43 nodes / 8
    _check(model, proto)


def test_short_graphs_keep_a_single_run_function() -> None:
    model = sofie_root.compile(chain_model(20), passes=[])
    assert "part0(" not in model.source


@pytest.mark.parametrize("n", [500])
def test_long_fused_chain_is_cut_into_groups(n) -> None:
    # one loop of n steps costs the C++ compiler super-linear time: groups of at most MAX_GROUP
    proto = chain_model(n)
    model = sofie_root.compile(proto)
    assert [node.op_type for node in model.graph.nodes] == ["FusedElementwise"] * -(-n // MAX_GROUP)
    # steps are statements, not one nested expression (8,000 nested nodes crashed cling)
    depth = deepest = 0
    for ch in model.source:
        depth += (ch == "(") - (ch == ")")
        deepest = max(deepest, depth)
    assert deepest < 20, deepest
    _check(model, proto)


def test_transpose_copies_contiguous_runs_with_memmove() -> None:
    # an element loop over a short contiguous run took cling ~10 s to vectorise (compile time of
    # the synthetic transformer); the run is one memmove, the strided case stays a loop
    x = np.random.default_rng(0).standard_normal((3, 8, 2, 8)).astype(np.float32)
    for perm, memmove in (([0, 2, 1, 3], True), ([0, 2, 3, 1], False)):
        proto = make_model([helper.make_node("Transpose", ["x"], ["y"], perm=perm)],
                           [value_info("x", np.float32, ["N", 8, 2, 8])], [value_info("y", np.float32, None)])
        model = sofie_root.compile(proto, passes=[])
        assert ("std::memmove" in model.source) == memmove
        np.testing.assert_array_equal(model(x), np.transpose(x, perm))


def test_topological_sort_of_a_reversed_chain() -> None:
    proto = chain_model(3000)
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(reversed(nodes))
    graph = convert_model(proto, "reversed")
    assert [n.outputs[0] for n in graph.nodes] == [n.output[0] for n in nodes]


def test_a_cycle_is_an_error() -> None:
    proto = chain_model(5)
    proto.graph.node[0].input[0] = "t3"  # t0 <- t3 <- t2 <- t1 <- t0
    with pytest.raises(sofie_root.InvalidGraphError, match="cycle"):
        sofie_root.compile(proto)


def test_arena_layout_is_not_deeply_nested() -> None:
    # the offset of a buffer is the largest end of the buffers below it: written as nested
    # std::max calls it was 1,026 deep in a 5,000-node transformer and crashed cling
    from benchmarks.compile_time import transformer_model
    from sofie_root.codegen.emitter import generate
    from sofie_root.passes import run_passes

    source = generate(run_passes(convert_model(transformer_model(400), "t"), None), "ns_t").source
    depth = deepest = 0
    for ch in source:
        depth += (ch == "(") - (ch == ")")
        deepest = max(deepest, depth)
    assert deepest < 20, deepest
