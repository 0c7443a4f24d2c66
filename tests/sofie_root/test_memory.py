"""Arena planning: tensors live at the same time never share bytes (read from the generated C++,
at several batch sizes, against lifetimes computed here from the graph), in-place element-wise
ops only where legal, results equal to onnxruntime with in-place on and off, and the arena
within 1.1x the liveness lower bound on the benchmark models."""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import sofie_root
from benchmarks import hep_models
from sofie_root.codegen import memory
from sofie_root.codegen.emitter import INPLACE_KEY, generate
from sofie_root.frontends.onnx import convert_model
from sofie_root.ir import Dim
from sofie_root.ir.graph import Graph, subgraph_reads
from sofie_root.ops.base import lookup
from sofie_root.passes import run_passes

from .ort_check import make_model, run_ort, value_info

BATCHES = (1, 3, 64, 256)
F = np.float32


# -- reading the layout back from the generated C++ ---------------------------------------------

_SYM = re.compile(r"const std::int64_t (\w+) = sym\[(\d+)\];")
_LAYOUT = re.compile(r"const std::size_t (a\d+_(?:size|off)) = (.*);$")
_TOP = re.compile(r"arena_bytes = std::max\(arena_bytes, (.*)\);$")
_BIND = re.compile(r"\*const (\w+) = reinterpret_cast<[^>]*>\(arena \+ (\w+(?:\[\d+\])?)\);")
# a long graph is run by part functions that read the offsets from an array filled by run()
_OFFS = re.compile(r"std::size_t off\[\d+\] = \{(.*)\};$")


def _python(expr: str) -> str:
    return (expr.replace("std::max<std::int64_t>(", "max(").replace("std::max<std::size_t>(", "max(")
            .replace("std::max(", "max(")
            .replace("std::size_t(", "(").replace("sofie_rt::round_up(", "round_up("))


def actual_layout(gen, values: dict[str, int]) -> tuple[dict[str, int], int]:
    """(offset of each arena pointer variable, arena bytes) as the generated code computes them."""
    env: dict[str, object] = {"max": max, "round_up": lambda n: (n + 63) // 64 * 64}
    offsets: dict[str, str] = {}
    arena = 0
    for line in gen.source.splitlines():
        line = line.strip()
        if m := _SYM.match(line):
            env[m[1]] = values[gen.symbols[int(m[2])]]
        elif m := _LAYOUT.match(line):
            env[m[1]] = eval(_python(m[2]), env)
        elif m := _TOP.match(line):
            arena = max(arena, eval(_python(m[1]), env))
        elif m := _OFFS.match(line):
            env["off"] = [env[a.strip()] for a in m[1].split(",")]
        elif m := _BIND.search(line):
            offsets[m[1]] = m[2]
    # evaluated last: the part functions bind their pointers before run() computes the layout
    return {var: eval(expr, env) for var, expr in offsets.items()}, arena


def lifetimes(graph: Graph) -> dict[str, tuple[int, int]]:
    """[first, last] step of every node output (every read counts, sub-graph reads included)."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for step, node in enumerate(graph.nodes):
        for i in [*node.inputs, *subgraph_reads(node)]:
            if i:
                last[i] = step
        for o in node.outputs:
            if o:
                first.setdefault(o, step)
    return {t: (s, max(s, last.get(t, s))) for t, s in first.items()}


def _legal_inplace(graph: Graph, a: str, b: str, life) -> bool:
    """b overwrites a in place, legally: output 0 of the node that reads a last, same shape and
    dtype, an operator allowed to, a passed once (or an element-wise op); or b is a reshaping
    copy (Reshape, Squeeze, Identity) of a, which a is not read after."""
    step = life[a][1]
    if life[b][0] != step:
        return False
    node = graph.nodes[step]
    op = lookup(node.domain, node.op_type)
    ia, ib = graph.info(a), graph.info(b)
    if op is not None and op.view_of_input:  # a reshaping copy of its input 0: the same bytes
        return (node.outputs[0] == b and node.inputs[0] == a and ia.dtype == ib.dtype and ia.size == ib.size
                and a not in graph.outputs and a not in graph.inputs)
    return (node.outputs[0] == b and a in node.inputs and op is not None and op.inplace_ok
            and ia.dtype == ib.dtype and tuple(ia.shape) == tuple(ib.shape)
            and (node.inputs.count(a) == 1 or op.inplace_repeated_ok)
            and a not in graph.outputs and a not in graph.inputs)


def check_layout(graph: Graph, gen, batches=BATCHES, inplace: bool = True) -> int:
    """No two tensors (or workspaces) live at the same step share a byte, unless one computes
    the other in place legally; offsets are 64-byte aligned and inside the arena. Returns the
    number of in-place pairs seen."""
    life = lifetimes(graph)
    for name in gen.arena_vars:
        if name.startswith("\x00ws"):
            step = int(name[3:].split("_")[0])
            life[name] = (step, step)
    assert set(gen.arena_vars) >= {t for t in life if t not in graph.outputs}
    # and the arena holds nothing that no node writes (an initializer placed there would be read
    # uninitialised)
    assert set(gen.arena_vars) <= set(life), f"arena tensors no node produces: {set(gen.arena_vars) - set(life)}"
    pairs = 0
    for b in batches:
        values = dict.fromkeys(gen.symbols, b)
        offsets, arena = actual_layout(gen, values)
        spans = {}
        for name, var in gen.arena_vars.items():
            if name.startswith("\x00ws"):
                n = gen.arena.nbytes(name, values)  # workspace sizes are the operator's business
            else:
                info = graph.info(name)
                size = info.size * info.dtype.itemsize
                if isinstance(size, Dim):
                    size = size.substitute(gen.data_symbols)
                n = size.evaluate(values) if isinstance(size, Dim) else int(size)
            off = offsets[var]
            assert off % 64 == 0, f"{name!r} at offset {off}"
            assert off + n <= arena, f"{name!r} ends after the arena ({off} + {n} > {arena})"
            spans[name] = (off, off + n)
        names = sorted(spans, key=lambda t: life[t])
        for i, a in enumerate(names):
            (_a0, a1), (sa, ea) = life[a], spans[a]
            for c in names[i + 1:]:
                (c0, _c1), (sc, ec) = life[c], spans[c]
                if c0 > a1:
                    break
                if sa < ec and sc < ea and ea > sa and ec > sc:
                    ok = inplace and (_legal_inplace(graph, a, c, life) or _legal_inplace(graph, c, a, life))
                    assert ok, f"batch {b}: {a!r} {life[a]} and {c!r} {life[c]} share bytes"
                    pairs += b == batches[0]
    return pairs


# -- models ----------------------------------------------------------------------------------

def _graph(proto: onnx.ModelProto, passes=None) -> Graph:
    return run_passes(convert_model(proto, "<test>", None), passes)


def _with_inplace(graph: Graph, on: bool) -> Graph:
    return graph.replace(metadata={**graph.metadata, INPLACE_KEY: "on" if on else "off"})


def chain_model() -> onnx.ModelProto:
    # Relu(x) -> Sigmoid -> Add(bias) -> Clip -> Tanh: one buffer for the whole chain
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Sigmoid", ["r"], ["s"]),
             helper.make_node("Add", ["s", "bias"], ["a"]), helper.make_node("Clip", ["a", "lo", "hi"], ["c"]),
             helper.make_node("Tanh", ["c"], ["y"])]
    return make_model(nodes, [value_info("x", F, ["N", 5])], [value_info("y", F, None)],
                      {"bias": np.arange(5, dtype=F) / 5, "lo": np.array(0.55, F), "hi": np.array(0.9, F)})


def read_later_model() -> onnx.ModelProto:
    # r is read after Sigmoid(r) and Mul(r, r): neither may overwrite it; b [N,1] is broadcast
    # in Add(b, w) [N,4]; Mul(t, t) may overwrite t
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Sigmoid", ["r"], ["s"]),
             helper.make_node("Mul", ["r", "r"], ["m"]), helper.make_node("Neg", ["z"], ["b"]),
             helper.make_node("Add", ["b", "w"], ["a"]), helper.make_node("Add", ["a", "m"], ["t"]),
             helper.make_node("Mul", ["t", "t"], ["u"]), helper.make_node("Sub", ["u", "r"], ["y"]),
             helper.make_node("Tanh", ["s"], ["y2"])]
    return make_model(nodes, [value_info("x", F, ["N", 4]), value_info("z", F, ["N", 1])],
                      [value_info("y", F, None), value_info("y2", F, None)],
                      {"w": np.array([[0.5, -1.0, 2.0, 0.25]], F)})


def workspace_model() -> onnx.ModelProto:
    # Conv (im2col workspace, constant size next to N-sized tensors), Softmax, TopK
    w = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(F)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "r"], ["s"]),
             helper.make_node("Reshape", ["s", "shape"], ["f"]),
             helper.make_node("Softmax", ["f"], ["p"], axis=1),
             helper.make_node("TopK", ["p", "k"], ["v", "i"], axis=1),
             helper.make_node("Exp", ["v"], ["y"])]
    w2 = np.random.default_rng(1).standard_normal((4, 4, 3, 3)).astype(F) * 0.2
    return make_model(nodes, [value_info("x", F, ["N", 2, 6, 6])], [value_info("y", F, None), value_info("i", np.int64, None)],
                      {"w": w, "w2": w2, "shape": np.array([0, -1], np.int64), "k": np.array([5], np.int64)})


def nonzero_model() -> onnx.ModelProto:
    # a data-dependent size: NonZero's count, bounded by the input size for planning
    nodes = [helper.make_node("Greater", ["x", "zero"], ["g"]), helper.make_node("NonZero", ["g"], ["nz"]),
             helper.make_node("Neg", ["nz"], ["n1"]), helper.make_node("Abs", ["n1"], ["n2"]),
             helper.make_node("Cast", ["n2"], ["y"], to=TensorProto.FLOAT),
             helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Exp", ["r"], ["e"]),
             helper.make_node("Sigmoid", ["e"], ["y2"])]
    return make_model(nodes, [value_info("x", F, ["N", 3])], [value_info("y", F, None), value_info("y2", F, None)],
                      {"zero": np.array(0.0, F)})


def if_model() -> onnx.ModelProto:
    # h is read inside the If's branches: the Sigmoid before the If must not overwrite it
    then_g = helper.make_graph([helper.make_node("Add", ["h", "one"], ["o"])], "then", [],
                               [value_info("o", F, ["N", 4])])
    else_g = helper.make_graph([helper.make_node("Sub", ["h", "one"], ["o2"])], "else", [],
                               [value_info("o2", F, ["N", 4])])
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Sigmoid", ["h"], ["s"]),
             helper.make_node("ReduceSum", ["s"], ["rs"], keepdims=0),
             helper.make_node("Greater", ["rs", "thr"], ["cond"]),
             helper.make_node("If", ["cond"], ["b"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Tanh", ["b"], ["t"]), helper.make_node("Mul", ["t", "s"], ["y"])]
    return make_model(nodes, [value_info("x", F, ["N", 4])], [value_info("y", F, None)],
                      {"one": np.array(1.0, F), "thr": np.array(3.0, F)})


def norm_model() -> onnx.ModelProto:
    # BatchNormalization, InstanceNormalization, LayerNormalization: statistics first, then
    # element by element, so each may overwrite its input
    rng = np.random.default_rng(2)
    c = rng.random(3).astype(F) + 0.5
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "c1", "c2", "c3", "c1"], ["bn"]),
             helper.make_node("InstanceNormalization", ["bn", "c1", "c2"], ["inorm"]),
             helper.make_node("LayerNormalization", ["inorm", "s4", "b4"], ["ln"], axis=-1),
             helper.make_node("Sigmoid", ["ln"], ["y"])]
    return make_model(nodes, [value_info("x", F, ["N", 3, 4])], [value_info("y", F, None)],
                      {"c1": c, "c2": c - 0.7, "c3": c * 0.1, "s4": rng.random(4).astype(F) + 0.5,
                       "b4": rng.random(4).astype(F)})


HELPER_MODELS = {"norm": norm_model, "chain": chain_model, "read_later": read_later_model, "workspace": workspace_model,
                 "nonzero": nonzero_model, "if": if_model}


def _inputs(name: str, batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(batch)
    if name == "read_later":
        return [rng.standard_normal((batch, 4)).astype(F), rng.standard_normal((batch, 1)).astype(F)]
    if name == "workspace":
        return [rng.standard_normal((batch, 2, 6, 6)).astype(F)]
    if name == "chain":
        return [rng.standard_normal((batch, 5)).astype(F)]
    if name == "norm":
        return [rng.standard_normal((batch, 3, 4)).astype(F)]
    if name == "nonzero":
        return [rng.standard_normal((batch, 3)).astype(F)]
    return [rng.standard_normal((batch, 4)).astype(F) * (1 + batch % 3)]


@pytest.fixture(scope="module")
def hep_protos(tmp_path_factory) -> dict[str, onnx.ModelProto]:
    out = {}
    for name in sorted(hep_models.MODELS):
        path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
        hep_models.export(name, path)
        out[name] = onnx.load(path)
    return out


def _torch_graphs() -> dict[str, Graph]:
    torch = pytest.importorskip("torch")
    from sofie_root.frontends.torch import torch_to_onnx

    from .test_frontend_torch import EdgeConv, Encoder

    torch.manual_seed(0)
    edge = torch_to_onnx(EdgeConv().eval(), (torch.randn(2, 10, 2), torch.randn(2, 10, 4)),
                         dynamic_dims={0: {1: "P"}, 1: {1: "P"}}, exporter="torchscript")
    enc = torch_to_onnx(Encoder().eval(), (torch.randn(2, 6, 16),))
    return {"torch_edgeconv": _graph(edge), "torch_encoder": _graph(enc)}


def _keras_graph() -> dict[str, Graph]:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    from sofie_root.frontends.keras import keras_to_onnx

    L = keras.layers
    inp = keras.Input((12, 3))
    h = L.Conv1D(8, 3, padding="same", activation="relu")(inp)
    h = L.LayerNormalization()(h)
    h = L.LSTM(6)(h)
    out = L.Dense(2, activation="softmax")(L.Dense(16, activation="elu")(h))
    return {"keras_conv_lstm": _graph(keras_to_onnx(keras.Model(inp, out)))}


# -- the planner on its own --------------------------------------------------------------------

N = Dim.symbol("N")


def _check_plan(reqs: list[memory.Request], plan: memory.Plan, values) -> None:
    spans = plan.spans(values)
    arena = plan.arena_bytes(values)
    life = {r.name: (r.start, r.end) for r in reqs}
    alias = {r.name: r.alias for r in reqs}
    for r in reqs:
        off, n = spans[r.name]
        assert off % 64 == 0 and off + n <= arena
    for i, a in enumerate(reqs):
        for c in reqs[i + 1:]:
            if a.start <= c.end and c.start <= a.end:
                (sa, na), (sc, nc) = spans[a.name], spans[c.name]
                if sa < sc + nc and sc < sa + na and na and nc:
                    assert alias[c.name] == a.name or alias[a.name] == c.name, (a, c, life)


@pytest.mark.parametrize("seed", range(25))
def test_random_plans_never_overlap(seed: int) -> None:
    rng = np.random.default_rng(seed)
    reqs: list[memory.Request] = []
    for i in range(40):
        start = int(rng.integers(0, 25))
        end = start + int(rng.integers(0, 6))
        size = int(rng.integers(0, 5000))
        kind = int(rng.integers(0, 4))
        nbytes = [size, size * N, size * N + 4, 3 * N * N + size][kind]
        alias = None
        # take over a tensor whose last step is this one, like an in-place op
        free = [r for r in reqs if r.end == start and r.start < start and r.name not in {q.alias for q in reqs}]
        if free and rng.random() < 0.4:
            alias = free[0].name
        reqs.append(memory.Request(f"t{i}", nbytes, start, end, alias))
    reqs.sort(key=lambda r: r.start)
    plan = memory.plan(reqs)
    for n in (0, 1, 2, 7, 64, 1000):
        _check_plan(reqs, plan, {"N": n})
        assert plan.arena_bytes({"N": n}) >= plan.liveness_bound({"N": n})


def test_chain_reuses_memory() -> None:
    # equal-size tensors each live for two steps need two slots; computed in place, one
    plan = memory.plan([(f"t{i}", 1024 * N, i, i + 1) for i in range(10)])
    assert plan.arena_bytes({"N": 3}) == 2 * 1024 * 3
    plan = memory.plan([memory.Request(f"t{i}", 1024 * N, i, i + 1, f"t{i - 1}" if i else None) for i in range(10)])
    assert plan.arena_bytes({"N": 3}) == 1024 * 3 and len(plan.buffers) == 1


def test_constant_workspace_shares_space_with_batch_sized_tensors() -> None:
    # at batch 1 the 64 kB workspace is the big one, at batch 256 the N-sized tensors: one plan
    # reaches the liveness bound at both
    reqs = [("a", 32768 * N, 0, 1), ("ws", 73728, 2, 2), ("b", 8192 * N, 1, 2), ("c", 16384 * N, 2, 3)]
    plan = memory.plan(reqs)
    for n in (1, 256):
        _check_plan([memory.Request(*r) for r in reqs], plan, {"N": n})
        assert plan.arena_bytes({"N": n}) == plan.liveness_bound({"N": n})


def test_bad_requests_are_named() -> None:
    with pytest.raises(ValueError, match="'b' cannot take over the bytes of 'a'"):
        memory.plan([memory.Request("a", 64, 0, 2), memory.Request("b", 64, 1, 2, "a")])
    with pytest.raises(ValueError, match="'t' requested twice"):
        memory.plan([("t", 64, 0, 1), ("t", 64, 0, 1)])
    with pytest.raises(ValueError, match="symbols \\['N'\\]"):
        memory.plan([("t", 64 * N, 0, 1)]).arena_bytes({})


# -- in-place decisions --------------------------------------------------------------------------

def _aliases(graph: Graph) -> dict[str, str]:
    gen = generate(graph, "ns_test")
    return {r.name: r.alias for r in gen.arena.requests.values() if r.alias}


def test_inplace_where_legal() -> None:
    # without passes, so that fusion does not change the graph under test
    assert _aliases(_graph(chain_model(), [])) == {"s": "r", "a": "s", "c": "a"}
    # r is read later; b [N,1] is broadcast into a [N,4]; Mul(t, t) may overwrite t
    assert _aliases(_graph(read_later_model(), [])) == {"t": "a", "u": "t"}
    # h is read by the If's branches after the Sigmoid; the If's output may be overwritten
    assert _aliases(_graph(if_model(), [])) == {"t": "b"}
    # Conv, Softmax and TopK are not element-wise; graph outputs are never in the arena; the
    # Reshape f of s (read by nothing else) takes over s's buffer and copies nothing
    assert _aliases(_graph(workspace_model(), [])) == {"r": "c", "s": "c2", "f": "s"}
    assert _aliases(_graph(norm_model(), [])) == {"bn": "r", "inorm": "bn", "ln": "inorm"}
    # NonZero's output has a data-dependent size
    assert _aliases(_graph(nonzero_model(), [])) == {"n1": "nz", "n2": "n1", "e": "r"}
    assert _aliases(_with_inplace(_graph(chain_model(), []), False)) == {}


# -- every test model: no live overlap, in the generated code, at several batch sizes ------------

@pytest.mark.parametrize("inplace", [True, False])
@pytest.mark.parametrize("name", sorted(HELPER_MODELS))
def test_helper_models_have_no_live_overlap(name: str, inplace: bool) -> None:
    for passes in (None, []):
        graph = _with_inplace(_graph(HELPER_MODELS[name](), passes), inplace)
        gen = generate(graph, "ns_test")
        pairs = check_layout(graph, gen, inplace=inplace)
        assert pairs == len([r for r in gen.arena.requests.values() if r.alias])
        assert inplace or pairs == 0


@pytest.mark.parametrize("inplace", [True, False])
def test_benchmark_models_have_no_live_overlap(hep_protos, inplace: bool) -> None:
    for proto in hep_protos.values():
        for passes in (None, []):
            g = _with_inplace(_graph(proto, passes), inplace)
            check_layout(g, generate(g, "ns_test"), inplace=inplace)


@pytest.mark.parametrize("split", [False, True])
def test_layout_check_can_fail(monkeypatch, split: bool) -> None:
    """The checker reads both forms of the generated layout (offsets as locals of run(), or an
    array read by the part functions of a long graph) and fails on a layout with two live tensors
    at the same bytes, or on an arena tensor that no node writes."""
    from sofie_root.codegen import emitter

    if split:
        monkeypatch.setattr(emitter, "PART_NODES", 2)
    graph = _with_inplace(_graph(read_later_model(), []), False)
    gen = generate(graph, "ns_test")
    assert ("off[" in gen.source) == split
    check_layout(graph, gen, inplace=False)
    # every arena pointer at the offset of the first one
    first = re.search(r"arena \+ (\w+(?:\[\d+\])?)\)", gen.source)[1]
    squashed = re.sub(r"arena \+ \w+(?:\[\d+\])?\)", f"arena + {first})", gen.source)
    with pytest.raises(AssertionError, match="share bytes"):
        check_layout(graph, dataclasses.replace(gen, source=squashed), inplace=False)
    # an initializer in the arena: read, never written
    stray = dataclasses.replace(gen, arena_vars={**gen.arena_vars, "w": next(iter(gen.arena_vars.values()))})
    with pytest.raises(AssertionError, match="no node produces"):
        check_layout(graph, stray, inplace=False)


def test_torch_and_keras_models_have_no_live_overlap() -> None:
    graphs = {**_torch_graphs(), **_keras_graph()}
    for _name, graph in graphs.items():
        for inplace in (True, False):
            g = _with_inplace(graph, inplace)
            check_layout(g, generate(g, "ns_test"), inplace=inplace)


def test_arena_within_tenth_of_the_liveness_bound(hep_protos) -> None:
    for name, proto in hep_protos.items():
        gen = generate(_graph(proto), "ns_test")
        for n in (1, 7, 256):
            s = gen.memory_stats({"N": n})
            assert s["liveness_bound_bytes"] <= s["arena_bytes"] <= 1.1 * s["liveness_bound_bytes"], (name, n, s)
            assert s["arena_bytes"] < s["intermediate_bytes"] + s["workspace_bytes"], (name, n, s)


# -- results: in place or not, equal to onnxruntime ----------------------------------------------

@pytest.mark.parametrize("name", sorted(HELPER_MODELS))
def test_helper_models_match_onnxruntime_with_and_without_inplace(name: str) -> None:
    proto = HELPER_MODELS[name]()
    for passes, inplace in (([], True), ([], False), (None, True)):
        model = sofie_root.compile(_with_inplace(_graph(proto, []), inplace), passes=passes)
        if passes == []:  # (fusion passes may leave nothing to compute in place)
            assert (model.memory_stats(N=4)["inplace_tensors"] > 0) == inplace
        for batch in (1, 5):
            xs = _inputs(name, batch)
            for got, ref in zip(model.infer(*xs), run_ort(proto, *xs)):
                assert got.shape == ref.shape
                np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_transformer_matches_onnxruntime_with_and_without_inplace(hep_protos) -> None:
    proto = hep_protos["transformer"]
    graph = _graph(proto)
    xs = hep_models.inputs("transformer", 3, np.random.default_rng(0))
    ref = run_ort(proto, *xs)
    for inplace in (True, False):
        model = sofie_root.compile(_with_inplace(graph, inplace), passes=[])
        assert (model.memory_stats(N=3)["inplace_tensors"] > 0) == inplace
        np.testing.assert_allclose(model.infer(*xs)[0], ref[0], rtol=1e-4, atol=1e-5)


def test_memory_stats_api() -> None:
    model = sofie_root.compile(_graph(chain_model(), []), passes=[])
    s1, s256 = model.memory_stats(N=1), model.memory_stats(N=256)
    assert set(s1) >= {"arena_bytes", "intermediate_bytes", "liveness_bound_bytes", "weight_bytes"}
    # the three chain tensors of [N, 5] floats share one 64-byte aligned block
    assert s256["intermediate_bytes"] == 4 * 256 * 5 * 4
    assert s256["arena_bytes"] == s256["liveness_bound_bytes"] == 256 * 5 * 4
    assert s1["arena_bytes"] == 64
    with pytest.raises(sofie_root.SofieError, match="unknown symbols \\['M'\\]"):
        model.memory_stats(M=3)
    with pytest.raises(sofie_root.SofieError, match="give a value for each"):
        model.memory_stats()
    with pytest.raises(sofie_root.SofieError, match="non-negative integer"):
        model.memory_stats(N=-1)


def test_reshaping_copies_share_their_input_buffer() -> None:
    # Neg -> Reshape -> Unsqueeze -> Squeeze -> Flatten -> Identity: each copy takes over the
    # buffer of an input nothing reads afterwards (no copy at run time); the results equal
    # onnxruntime and no two live tensors overlap
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [-1, 2, 6])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Neg", ["r"], ["n"]),
             helper.make_node("Reshape", ["n", "shape"], ["a"]),
             helper.make_node("Unsqueeze", ["a", "axes"], ["b"]),
             helper.make_node("Squeeze", ["b", "axes"], ["c"]),
             helper.make_node("Flatten", ["c"], ["d"], axis=1),
             helper.make_node("Identity", ["d"], ["e"]),
             helper.make_node("Reshape", ["r", "shape"], ["rr"]),
             helper.make_node("Flatten", ["rr"], ["f"], axis=1),
             helper.make_node("Add", ["e", "f"], ["y"])]
    proto = make_model(nodes, [value_info("x", np.float32, ["N", 12])], [value_info("y", np.float32, None)])
    proto.graph.initializer.extend([shape, axes])
    alias = _aliases(_graph(proto, []))
    assert {k: alias.get(k) for k in ("a", "b", "c", "d", "e")} == {"a": "n", "b": "a", "c": "b", "d": "c", "e": "d"}
    assert alias.get("rr") == "r"  # r's last reader is this Reshape (the Neg read it earlier)
    x = np.random.default_rng(3).standard_normal((5, 12)).astype(np.float32)
    model = sofie_root.compile(proto, passes=[])
    np.testing.assert_allclose(model(x), run_ort(proto, x)[0], rtol=1e-6, atol=1e-6)
    check_layout(model.graph, model._generated)
