"""Sequences and optionals against onnxruntime (and torch, the ONNX reference): SplitToSequence,
SequenceConstruct/Empty/At/Insert/Erase/Length, ConcatFromSequence, SequenceMap, Optional,
OptionalHasElement, OptionalGetElement; what is refused (sequence graph outputs, sequences whose
length changes in a Loop, an empty optional's element, out-of-range positions)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import sofie_root
from sofie_root.errors import SofieError, UnsupportedOperatorError

from .ort_check import assert_matches_ort, make_model, run_reference, value_info

F = np.float32
I64 = np.int64


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(F)


def test_split_to_sequence_at_length_and_concat():
    """Uneven pieces along axis 1 with a symbolic batch; elements read at constant positions
    (negative too), the length as an output, and the pieces concatenated back in another order."""
    nodes = [helper.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=1),
             helper.make_node("SequenceAt", ["seq", "one"], ["a"]),
             helper.make_node("SequenceAt", ["seq", "minus1"], ["b"]),
             helper.make_node("SequenceLength", ["seq"], ["n"]),
             helper.make_node("SequenceErase", ["seq", "zero"], ["seq2"]),
             helper.make_node("SequenceInsert", ["seq2", "x"], ["seq3"]),
             helper.make_node("ConcatFromSequence", ["seq3"], ["cat"], axis=1)]
    model = make_model(nodes, [value_info("x", F, ("N", 6))],
                       [value_info("a", F, None), value_info("b", F, None), value_info("n", I64, None),
                        value_info("cat", F, None)],
                       {"split": np.array([2, 3, 1], dtype=I64), "one": np.array(1, dtype=I64),
                        "minus1": np.array(-1, dtype=I64), "zero": np.array(0, dtype=I64)}, opset=17)
    m = sofie_root.compile(model)
    for n in (1, 4):
        got = assert_matches_ort(model, _rand(n, 6, seed=n), compiled=m)
        assert got[3].shape == (n, 10)


@pytest.mark.parametrize("keepdims,axis,new_axis_axis", [(0, 0, 0), (0, 2, -1), (1, 1, 1)])
def test_split_into_single_slices_and_stack(keepdims, axis, new_axis_axis):
    nodes = [helper.make_node("SplitToSequence", ["x"], ["seq"], axis=axis, keepdims=keepdims),
             helper.make_node("ConcatFromSequence", ["seq"], ["y"], axis=new_axis_axis, new_axis=1)]
    model = make_model(nodes, [value_info("x", F, (3, 2, 4))], [value_info("y", F, None)], opset=17)
    m = sofie_root.compile(model)
    # resolve_sequences: stacking every squeezed slice (unbind) moves an axis, a Transpose
    assert ("SplitToSequence" in {n.op_type for n in m.graph.nodes}) == bool(keepdims)
    for compiled in (m, sofie_root.compile(model, passes=[])):
        assert_matches_ort(model, _rand(3, 2, 4), compiled=compiled)


@pytest.mark.parametrize("axis,stack_axis", [(1, 2), (1, -1), (2, 2), (2, 0), (1, 1), (-1, 1)])
def test_unbind_and_stack_is_a_transpose(axis, stack_axis):
    nodes = [helper.make_node("SplitToSequence", ["x"], ["seq"], axis=axis, keepdims=0),
             helper.make_node("ConcatFromSequence", ["seq"], ["y"], axis=stack_axis, new_axis=1)]
    model = make_model(nodes, [value_info("x", F, ("N", 5, 4))], [value_info("y", F, None)], opset=17)
    m = sofie_root.compile(model)
    assert not {n.op_type for n in m.graph.nodes} & {"SplitToSequence", "ConcatFromSequence"}
    for n in (1, 3):
        assert_matches_ort(model, _rand(n, 5, 4), compiled=m)


def test_split_in_equal_chunks_with_a_remainder():
    nodes = [helper.make_node("SplitToSequence", ["x", "two"], ["seq"], axis=-1),
             helper.make_node("SequenceAt", ["seq", "last"], ["tail"]),
             helper.make_node("ConcatFromSequence", ["seq"], ["y"], axis=1)]
    model = make_model(nodes, [value_info("x", I64, (2, 5))], [value_info("tail", I64, None), value_info("y", I64, None)],
                       {"two": np.array(2, dtype=I64), "last": np.array(2, dtype=np.int32)}, opset=17)
    got = assert_matches_ort(model, np.arange(10, dtype=I64).reshape(2, 5))
    assert got[0].shape == (2, 1) and got[1].shape == (2, 5)


def test_construct_empty_insert_erase():
    """Tensors of different shapes in one sequence, built with SequenceConstruct and from
    SequenceEmpty, edited with Insert (front, middle, default end) and Erase (default last)."""
    nodes = [helper.make_node("SequenceConstruct", ["a", "b"], ["s1"]),
             helper.make_node("SequenceInsert", ["s1", "c", "one"], ["s2"]),
             helper.make_node("SequenceInsert", ["s2", "a"], ["s3"]),
             helper.make_node("SequenceErase", ["s3"], ["s4"]),
             helper.make_node("SequenceErase", ["s4", "zero"], ["s5"]),
             helper.make_node("ConcatFromSequence", ["s5"], ["y"], axis=0),
             helper.make_node("SequenceEmpty", [], ["e0"], dtype=1),
             helper.make_node("SequenceInsert", ["e0", "c"], ["e1"]),
             helper.make_node("SequenceInsert", ["e1", "b", "zero"], ["e2"]),
             helper.make_node("ConcatFromSequence", ["e2"], ["z"], axis=0)]
    model = make_model(nodes, [value_info("a", F, (2, 3)), value_info("b", F, (1, 3)), value_info("c", F, ("K", 3))],
                       [value_info("y", F, None), value_info("z", F, None)],
                       {"one": np.array(1, dtype=I64), "zero": np.array(0, dtype=I64)}, opset=17)
    m = sofie_root.compile(model)
    # the resolve_sequences pass reads the tensors themselves: Concats, no sequence left
    assert {n.op_type for n in m.graph.nodes} == {"Concat"}
    plain = sofie_root.compile(model, passes=[])  # the sequence operators themselves
    assert "SequenceInsert" in {n.op_type for n in plain.graph.nodes}
    for k in (1, 3):
        for compiled in (m, plain):
            assert_matches_ort(model, _rand(2, 3, seed=1), _rand(1, 3, seed=2), _rand(k, 3, seed=k), compiled=compiled)


def test_known_elements_at_negative_positions_and_sequence_at():
    """resolve_sequences with negative Insert/Erase positions and SequenceAt of a constructed
    sequence, against onnxruntime; a sequence of split pieces keeps its sequence operators."""
    nodes = [helper.make_node("SequenceConstruct", ["a", "b", "c"], ["s1"]),
             helper.make_node("SequenceInsert", ["s1", "b", "minus1"], ["s2"]),  # before the last
             helper.make_node("SequenceErase", ["s2", "minus3"], ["s3"]),
             helper.make_node("SequenceAt", ["s3", "minus2"], ["at"]),
             helper.make_node("ConcatFromSequence", ["s3"], ["y"], axis=-1),
             helper.make_node("SplitToSequence", ["a"], ["p"], axis=1, keepdims=1),
             helper.make_node("ConcatFromSequence", ["p"], ["z"], axis=0)]
    model = make_model(nodes, [value_info(n, F, ("N", 3)) for n in "abc"],
                       [value_info("at", F, None), value_info("y", F, None), value_info("z", F, None)],
                       {"minus1": np.array(-1, dtype=I64), "minus2": np.array(-2, dtype=I64),
                        "minus3": np.array(-3, dtype=I64)}, opset=17)
    m = sofie_root.compile(model)
    ops = [n.op_type for n in m.graph.nodes]
    assert "Identity" in ops and "Concat" in ops and "SequenceConstruct" not in ops and "SplitToSequence" in ops
    for n in (1, 5):
        assert_matches_ort(model, *(_rand(n, 3, seed=k) for k in range(3)), compiled=m)


def test_sequence_at_run_time_position():
    """Elements of one shape: the position is read at run time, checked against the length."""
    nodes = [helper.make_node("SplitToSequence", ["x"], ["seq"], axis=0, keepdims=0),
             helper.make_node("SequenceAt", ["seq", "pos"], ["y"])]
    model = make_model(nodes, [value_info("x", F, (4, 3)), value_info("pos", I64, [])], [value_info("y", F, None)],
                       opset=17)
    m = sofie_root.compile(model)
    assert type(m) is sofie_root.Model
    x = _rand(4, 3)
    for p in (0, 3, -1, -4):
        assert_matches_ort(model, x, np.array(p, dtype=I64), compiled=m)
    for p in (4, -5):
        with pytest.raises(SofieError, match="out of range"):
            m.infer(x, np.array(p, dtype=I64))


def test_sequence_map_with_an_extra_tensor_input():
    """The body runs once per element; the extra tensor input is passed whole to every call."""
    body = helper.make_graph([helper.make_node("Mul", ["e", "wb"], ["m"]), helper.make_node("Relu", ["m"], ["r"]),
                              helper.make_node("ReduceSum", ["e"], ["s"], keepdims=0)], "body",
                             [value_info("e", F, None), value_info("wb", F, None)],
                             [value_info("r", F, None), value_info("s", F, None)])
    nodes = [helper.make_node("SplitToSequence", ["x"], ["seq"], axis=0, keepdims=0),
             helper.make_node("SequenceMap", ["seq", "w"], ["rs", "ss"], body=body),
             helper.make_node("ConcatFromSequence", ["rs"], ["y"], axis=0, new_axis=1),
             helper.make_node("ConcatFromSequence", ["ss"], ["z"], axis=0, new_axis=1)]
    model = make_model(nodes, [value_info("x", F, (5, 2, 3)), value_info("w", F, (3,))],
                       [value_info("y", F, None), value_info("z", F, None)], opset=17)
    x, w = _rand(5, 2, 3, seed=1), _rand(3, seed=2)
    got = sofie_root.compile(model).infer(x, w)
    ref = run_reference(model, x, w)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[0], np.maximum(x * w, 0), rtol=1e-6)


def test_torch_script_list_of_tensors_against_torch():
    """``torch.split`` into a list, list indexing and append, ``torch.cat``/``stack``/``len``
    exported by the TorchScript exporter (SplitToSequence, SequenceAt, SequenceConstruct,
    SequenceLength)."""
    pytest.importorskip("torch")
    import io
    import warnings

    import onnx
    import torch

    from ._torch_loops import ListOfTensors

    with warnings.catch_warnings():  # TorchScript and its exporter are deprecated, and what this tests
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(ListOfTensors())
        x = torch.randn(3, 6)
        buf = io.BytesIO()
        torch.onnx.export(scripted, (x,), buf, dynamo=False, opset_version=17)
    model = onnx.load_from_string(buf.getvalue())
    ops = {n.op_type for n in model.graph.node}
    assert {"SplitToSequence", "SequenceAt", "SequenceConstruct", "SequenceLength"} <= ops
    m = sofie_root.compile(model)
    for scale in (1.0, -2.0):
        xs = x * scale
        for g, r in zip(m.infer(xs.numpy()), scripted(xs)):
            np.testing.assert_allclose(g, np.asarray(r), rtol=1e-6, atol=1e-6)


def test_sequence_graph_output_is_refused():
    model = make_model([helper.make_node("SplitToSequence", ["x"], ["seq"], axis=0)],
                       [value_info("x", F, (2, 3))],
                       [helper.make_tensor_sequence_value_info("seq", 1, None)], opset=17)
    with pytest.raises(SofieError, match="is a sequence"):
        sofie_root.compile(model)


def test_sequence_growing_in_a_loop_is_refused():
    """Inserted at the front: not a list appended to (frontends/loop_lists.py), a sequence whose
    length changes at run time, which the IR does not type."""
    body = helper.make_graph([helper.make_node("SequenceInsert", ["s", "x", "zero"], ["s2"]),
                              helper.make_node("Identity", ["c"], ["c2"])], "body",
                             [value_info("i", I64, []), value_info("c", bool, []),
                              helper.make_tensor_sequence_value_info("s", 1, None)],
                             [value_info("c2", bool, []), helper.make_tensor_sequence_value_info("s2", 1, None)])
    nodes = [helper.make_node("SequenceEmpty", [], ["e"]),
             helper.make_node("Loop", ["M", "", "e"], ["sf"], body=body),
             helper.make_node("ConcatFromSequence", ["sf"], ["y"], axis=0)]
    model = make_model(nodes, [value_info("M", I64, []), value_info("x", F, (2,))], [value_info("y", F, None)],
                       {"zero": np.array(0, dtype=I64)}, opset=17)
    with pytest.raises(SofieError, match="sequence or optional loop state is not supported"):
        sofie_root.compile(model)


def test_optionals():
    """Optional of a tensor holds it; an empty Optional does not; GetElement of the full one."""
    nodes = [helper.make_node("Optional", ["x"], ["ox"]),
             helper.make_node("Optional", [], ["oe"], type=helper.make_tensor_type_proto(1, None)),
             helper.make_node("OptionalHasElement", ["ox"], ["h1"]),
             helper.make_node("OptionalHasElement", ["oe"], ["h2"]),
             helper.make_node("OptionalGetElement", ["ox"], ["gx"]),
             helper.make_node("Add", ["gx", "x"], ["y"])]
    model = make_model(nodes, [value_info("x", F, (2, 3))],
                       [value_info("h1", bool, None), value_info("h2", bool, None), value_info("y", F, None)],
                       opset=18)
    m = sofie_root.compile(model)
    # resolve_sequences: the Add reads x itself, no Optional copies left (both paths checked)
    assert [n.op_type for n in m.graph.nodes] == ["Add"]
    for compiled in (m, sofie_root.compile(model, passes=[])):
        got = assert_matches_ort(model, _rand(2, 3), compiled=compiled)
        assert bool(got[0]) and not bool(got[1])


def test_optional_value_as_graph_output():
    """OptionalGetElement(Optional(x)) that is itself a graph output becomes an Identity."""
    nodes = [helper.make_node("Optional", ["x"], ["o"]), helper.make_node("OptionalGetElement", ["o"], ["g"]),
             helper.make_node("Neg", ["g"], ["y"])]
    model = make_model(nodes, [value_info("x", F, ("N", 3))], [value_info("g", F, None), value_info("y", F, None)],
                       opset=18)
    m = sofie_root.compile(model)
    assert sorted(n.op_type for n in m.graph.nodes) == ["Identity", "Neg"]
    assert_matches_ort(model, _rand(4, 3), compiled=m)


def test_element_of_an_empty_optional_is_refused():
    nodes = [helper.make_node("Optional", [], ["oe"], type=helper.make_tensor_type_proto(1, None)),
             helper.make_node("OptionalGetElement", ["oe"], ["y"])]
    model = make_model(nodes, [], [value_info("y", F, None)], opset=18)
    with pytest.raises(UnsupportedOperatorError, match="empty"):
        sofie_root.compile(model)


def test_sequences_and_optionals_round_trip_through_root(tmp_path):
    """The sequence and optional types are stored in the .root file (schema: tensor info
    ``elements``/``optional``); the loaded model gives the same bits."""
    nodes = [helper.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=1),
             helper.make_node("SequenceAt", ["seq", "one"], ["a"]),
             helper.make_node("Optional", ["a"], ["oa"]),
             helper.make_node("OptionalGetElement", ["oa"], ["ga"]),
             helper.make_node("ConcatFromSequence", ["seq"], ["cat"], axis=1)]
    model = make_model(nodes, [value_info("x", F, ("N", 6))], [value_info("ga", F, None), value_info("cat", F, None)],
                       {"split": np.array([2, 3, 1], dtype=I64), "one": np.array(1, dtype=I64)}, opset=18)
    # without resolve_sequences, which would read `a` for `ga` and leave no optional to store
    from sofie_root.passes import DEFAULT

    passes = [p for p in DEFAULT if p != "resolve_sequences"]
    m = sofie_root.compile(model, passes=passes)
    path = str(tmp_path / "seq.root")
    m.save(path)
    loaded = sofie_root.load(path, passes=passes)
    assert loaded.graph.info("seq").elements == m.graph.info("seq").elements
    assert loaded.graph.info("oa").optional is True
    x = _rand(3, 6)
    for a, b in zip(m.infer(x), loaded.infer(x)):
        np.testing.assert_array_equal(a, b)


# -- lists appended to in a Loop (frontends/loop_lists.py) -------------------------------------------

@pytest.mark.parametrize("axis,new_axis", [(0, 1), (1, 1), (-1, 1), (0, 0), (1, 0)])
def test_list_appended_in_a_loop_with_early_exit(axis, new_axis):
    """SequenceEmpty -> Loop carrying it through SequenceInsert -> ConcatFromSequence, SequenceLength
    and SequenceAt: the list becomes a scan output whose length (at most the symbolic trip count N)
    is known after the run."""
    body = helper.make_graph([helper.make_node("Mul", ["h", "w"], ["h2"]),
                              helper.make_node("SequenceInsert", ["s", "h2"], ["s2"]),
                              helper.make_node("ReduceSum", ["h2"], ["t"], keepdims=0),
                              helper.make_node("Less", ["t", "thr"], ["c2"])], "body",
                             [value_info("i", I64, []), value_info("c", bool, []), value_info("h", F, None),
                              helper.make_tensor_sequence_value_info("s", 1, None)],
                             [value_info("c2", bool, []), value_info("h2", F, None),
                              helper.make_tensor_sequence_value_info("s2", 1, None)])
    nodes = [helper.make_node("Shape", ["x"], ["shp"], start=0, end=1),
             helper.make_node("Squeeze", ["shp"], ["M"]),
             helper.make_node("SequenceEmpty", [], ["e"]),
             helper.make_node("Loop", ["M", "true", "h0", "e"], ["hf", "sf"], body=body),
             helper.make_node("ConcatFromSequence", ["sf"], ["cat"], axis=axis, new_axis=new_axis),
             helper.make_node("SequenceLength", ["sf"], ["n"]),
             helper.make_node("SequenceAt", ["sf", "minus1"], ["last"])]
    model = make_model(nodes, [value_info("x", F, ("N", 1)), value_info("h0", F, (2, 3)), value_info("thr", F, [])],
                       [value_info("hf", F, None), value_info("cat", F, None), value_info("n", I64, None),
                        value_info("last", F, None)],
                       {"true": np.array(True), "w": np.full((2, 3), 1.5, F), "minus1": np.array(-1, I64)}, opset=17)
    m = sofie_root.compile(model)
    assert type(m) is sofie_root.Model
    h0 = np.abs(_rand(2, 3)) + 0.1
    counts = set()
    for n, thr in [(6, 1e9), (6, 20.0), (3, 1e9), (4, 0.0)]:
        got = assert_matches_ort(model, np.zeros((n, 1), F), h0, np.array(thr, F), compiled=m)
        counts.add(int(got[2]))
    assert len(counts) >= 3


def test_torch_script_list_appended_in_a_loop_against_torch_and_onnxruntime():
    pytest.importorskip("torch")
    import io
    import warnings

    import onnx
    import torch

    from ._torch_loops import AppendInLoop
    from .ort_check import run_ort

    with warnings.catch_warnings():  # TorchScript and its exporter are deprecated, and what this tests
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(AppendInLoop())
        buf = io.BytesIO()
        torch.onnx.export(scripted, (torch.randn(3, 4), 5), buf, dynamo=False, opset_version=17)
    model = onnx.load_from_string(buf.getvalue())
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    assert "SequenceInsert" in {n.op_type for n in loop.attribute[0].g.node}
    m = sofie_root.compile(model)
    x = torch.randn(3, 4)
    for n in (5, 2):
        got = m.infer(x.numpy(), np.array(n))
        for g, w in zip(got, scripted(x, n)):
            np.testing.assert_allclose(g, np.asarray(w.detach() if hasattr(w, "detach") else w), rtol=1e-5, atol=1e-6)
        for g, r in zip(got, run_ort(model, x.numpy(), np.array(n))):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_if_returning_sequences_with_a_runtime_condition():
    """Both branches build a sequence of the same element shapes; the If's output is one."""
    then_g = helper.make_graph([helper.make_node("SplitToSequence", ["x"], ["ts"], axis=0)], "then", [],
                               [helper.make_tensor_sequence_value_info("ts", 1, None)])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["nx"]),
                                helper.make_node("SplitToSequence", ["nx"], ["es"], axis=0)], "else", [],
                               [helper.make_tensor_sequence_value_info("es", 1, None)])
    nodes = [helper.make_node("If", ["c"], ["s"], then_branch=then_g, else_branch=else_g),
             helper.make_node("SequenceAt", ["s", "one"], ["y"]),
             helper.make_node("ConcatFromSequence", ["s"], ["z"], axis=1, new_axis=1)]
    model = make_model(nodes, [value_info("c", bool, []), value_info("x", F, (3, 2))],
                       [value_info("y", F, None), value_info("z", F, None)], {"one": np.array(1, dtype=I64)}, opset=17)
    m = sofie_root.compile(model)
    for c in (True, False):
        assert_matches_ort(model, np.array(c), _rand(3, 2), compiled=m)


def test_if_returning_sequences_of_different_lengths_is_refused():
    then_g = helper.make_graph([helper.make_node("SplitToSequence", ["x"], ["ts"], axis=0)], "then", [],
                               [helper.make_tensor_sequence_value_info("ts", 1, None)])
    else_g = helper.make_graph([helper.make_node("SplitToSequence", ["x"], ["es"], axis=1)], "else", [],
                               [helper.make_tensor_sequence_value_info("es", 1, None)])
    nodes = [helper.make_node("If", ["c"], ["s"], then_branch=then_g, else_branch=else_g),
             helper.make_node("ConcatFromSequence", ["s"], ["z"], axis=0)]
    model = make_model(nodes, [value_info("c", bool, []), value_info("x", F, (3, 2))], [value_info("z", F, None)],
                       opset=17)
    with pytest.raises(UnsupportedOperatorError, match="must agree in length"):
        sofie_root.compile(model)


@pytest.mark.parametrize("mapped", [False, True])
def test_split_pieces_become_tensors_unless_the_sequence_is_read(mapped):
    """resolve_sequences: SplitToSequence with sizes → a Split whose pieces the readers use, only
    when nothing reads the sequence itself (a SequenceMap does); idempotent either way."""
    from sofie_root.passes import PASSES

    body = helper.make_graph([helper.make_node("Neg", ["e"], ["r"])], "f", [value_info("e", F, None)],
                             [value_info("r", F, None)])
    nodes = [helper.make_node("SplitToSequence", ["x", "sizes"], ["s"], axis=1),
             helper.make_node("SequenceAt", ["s", "one"], ["a"]),
             helper.make_node("SequenceInsert", ["s", "a", "zero"], ["s2"]),
             helper.make_node("ConcatFromSequence", ["s2"], ["y"], axis=1)]
    outs = [value_info("a", F, None), value_info("y", F, None)]
    if mapped:
        nodes += [helper.make_node("SequenceMap", ["s"], ["m"], body=body),
                  helper.make_node("ConcatFromSequence", ["m"], ["z"], axis=1)]
        outs.append(value_info("z", F, None))
    model = make_model(nodes, [value_info("x", F, ("N", 6))], outs,
                       {"sizes": np.array([2, 2, 2], dtype=I64), "one": np.array(1, dtype=I64),
                        "zero": np.array(0, dtype=I64)}, opset=17)
    m = sofie_root.compile(model)
    ops = {n.op_type for n in m.graph.nodes}
    assert ("SplitToSequence" in ops) == mapped and ("Split" in ops) != mapped
    again = PASSES["resolve_sequences"](m.graph)
    assert str(again) == str(m.graph)
    for n in (1, 4):
        assert_matches_ort(model, _rand(n, 6, seed=n), compiled=m)
