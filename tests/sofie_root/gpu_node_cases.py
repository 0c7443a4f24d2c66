"""ONNX backend node cases for the GPU backend, merged into a few models per compile.

Each case is a tiny model; building one shared library per case (a C++ or nvcc compile of a few
seconds each) would take tens of minutes, so the cases of one opset are renamed apart (a prefix per
case) and merged into one model with every case's inputs and outputs: one build runs them all,
and each output is still compared with its own case's expected values at the case's tolerance.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import compose, helper

from sofie_root.errors import DataDependentShapeError, SofieError
from sofie_root.frontends.onnx import convert_model
from sofie_root.gpu.codegen import check_supported
from sofie_root.gpu.emitters import GPU_EMITTERS


@dataclass
class Case:
    name: str
    model: onnx.ModelProto
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    rtol: float
    atol: float


def gpu_cases(excluded: set[str]) -> tuple[list[Case], dict[str, str]]:
    """(cases the GPU backend claims, {case: why refused}) among the node cases of its operators;
    cases in ``excluded`` (the CPU backends' list, with reasons, in node_exclusions/) are left out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import onnx.backend.test.case.node as node

        cases = node.collect_testcases()
    ops = {op for dom, op in GPU_EMITTERS if dom == ""}
    out, refused = [], {}
    for c in cases:
        if not c.data_sets or c.name in excluded:
            continue
        if not all(n.op_type in ops and n.domain in ("", "ai.onnx") for n in c.model.graph.node):
            continue
        inputs, outputs = c.data_sets[0]
        if any(not isinstance(x, (np.ndarray, np.generic)) for x in list(inputs) + list(outputs)):
            continue
        try:
            try:
                graph = convert_model(c.model, c.name, None)
            except DataDependentShapeError:
                # shapes from input values (a Reshape target given as an input): compiled at the first
                # call with those values, as sofie_root.compile does (the merged model too)
                names = [i.name for i in c.model.graph.input if i.name not in {t.name for t in c.model.graph.initializer}]
                graph = convert_model(c.model, c.name, None, dict(zip(names, [np.asarray(x) for x in inputs])))
            check_supported(graph, "gpu-emulated")
        except SofieError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            refused[c.name] = (lines[1] if len(lines) > 2 else lines[0])[:200]
            continue
        out.append(Case(c.name, c.model, [np.asarray(x) for x in inputs], [np.asarray(x) for x in outputs],
                        c.rtol, c.atol))
    return out, refused


def _opsets(m: onnx.ModelProto) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((o.domain or "", o.version) for o in m.opset_import))


def groups(cases: list[Case], size: int = 60) -> list[list[Case]]:
    """Cases in groups of one opset, at most ``size`` per group."""
    by: dict[tuple, list[Case]] = {}
    for c in cases:
        by.setdefault(_opsets(c.model), []).append(c)
    out = []
    for key in sorted(by):
        members = by[key]
        out += [members[k:k + size] for k in range(0, len(members), size)]
    return out


def merge(group: list[Case]) -> onnx.ModelProto:
    """One model running every case of ``group`` side by side (names prefixed per case)."""
    graphs = []
    for k, c in enumerate(group):
        m = compose.add_prefix(c.model, f"c{k}_", rename_inputs=True, rename_outputs=True)
        graphs.append(m.graph)
    g = helper.make_graph(
        [n for gr in graphs for n in gr.node], "gpu_node_cases",
        [i for gr in graphs for i in gr.input], [o for gr in graphs for o in gr.output],
        [t for gr in graphs for t in gr.initializer], value_info=[v for gr in graphs for v in gr.value_info])
    model = helper.make_model(g, opset_imports=list(group[0].model.opset_import))
    model.ir_version = max(c.model.ir_version for c in group)
    return model


def compare(case: Case, got: list[np.ndarray]) -> str | None:
    """Why ``got`` does not match the case's expected outputs (None if it does)."""
    if len(got) != len(case.outputs):
        return f"{len(got)} outputs, expected {len(case.outputs)}"
    for k, (g, r) in enumerate(zip(got, case.outputs)):
        if g.shape != r.shape:
            return f"output {k}: shape {g.shape}, expected {r.shape}"
        try:
            if r.dtype.kind in "fc":
                np.testing.assert_allclose(g.astype(r.dtype), r, rtol=case.rtol, atol=case.atol, equal_nan=True)
            else:
                np.testing.assert_array_equal(g.astype(r.dtype), r)
        except AssertionError as e:
            return f"output {k}: {str(e).strip()[:400]}"
    return None
