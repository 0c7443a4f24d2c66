"""Graph networks in the style of DeepMind's Graph Nets (and of SOFIE's former GNN support):
edge, node and global update blocks, each an MLP given as a PyTorch module, a Keras model or an
ONNX model, with sum/mean/max aggregations, compiled into one ONNX graph and then into one
sofie_root model.

One call processes one graph (an event): ``nodes [n, Fn]``, ``edges [e, Fe]``, ``senders [e]``,
``receivers [e]`` (int64 node indices) and ``globals [1, Fg]``. The numbers of nodes ``n`` and edges
``e`` are symbolic, so every event can have its own. The three blocks run in Graph Nets' order:

1. edge block: ``e' = φe([e, v[receivers], v[senders], u])`` for every edge;
2. node block: ``v' = φv([Σ_received e', Σ_sent e', v, u])`` for every node (aggregation ρ e→v);
3. global block: ``u' = φu([ρ(e'), ρ(v'), u])``.

Which pieces each block sees is chosen as in Graph Nets (``edge_inputs``, ``node_inputs``,
``global_inputs``; the concatenation order is always the one listed above). A missing block leaves
its attribute unchanged (``GraphIndependent`` is the same without the aggregated inputs). Aggregations
are ``"sum"``, ``"mean"`` or ``"max"``; a node that receives no edge gets zeros from every aggregation.

In RDataFrame, ``sofie_root.functor(model, inputs={...}, variable=True)`` feeds each event's graph
from RVec columns, its node and edge counts taken from the columns' lengths (no padding); the
model records that senders and receivers index the nodes, so the functor checks their range.

>>> gn = GraphNetwork(edge_model=phi_e, node_model=phi_v, global_model=phi_u,         # doctest: +SKIP
...                   node_features=4, edge_features=3, global_features=2, edge_to_node="mean")
>>> model = sofie_root.compile(gn)                                                     # doctest: +SKIP
>>> nodes, edges, globals_ = model.infer(v, e, senders, receivers, u)                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportError

OPSET = 20
AGGREGATIONS = ("sum", "mean", "max")
EDGE_INPUTS = ("edges", "receivers", "senders", "globals")
NODE_INPUTS = ("received_edges", "sent_edges", "nodes", "globals")
GLOBAL_INPUTS = ("edges", "nodes", "globals")
#: ONNX metadata key of ``{input: input}``: which integer inputs index which input's rows (read by
#: ``sofie_root.rdf``, which cannot import it from here without importing the frontends)
INDICES_METADATA_KEY = "sofie_root.indices"


@dataclass
class GraphNetwork:
    """A Graph Nets ``GraphNetwork`` (edge, node and global blocks); compile it with
    :func:`sofie_root.compile`.

    Args:
        edge_model, node_model, global_model: the update functions: a ``torch.nn.Module``, a Keras
            model, an ``onnx.ModelProto`` or the path of an ``.onnx`` file, each mapping a batch of
            concatenated feature rows ``[B, F_in]`` to ``[B, F_out]``; ``None`` keeps that attribute.
        node_features, edge_features, global_features: the input feature sizes.
        edge_inputs, node_inputs, global_inputs: which pieces each block concatenates (see the
            module documentation); the defaults are Graph Nets' defaults.
        edge_to_node, edge_to_global, node_to_global: the aggregations (sum, mean or max).
    """

    edge_model: Any = None
    node_model: Any = None
    global_model: Any = None
    node_features: int = 0
    edge_features: int = 0
    global_features: int = 0
    edge_inputs: Sequence[str] = EDGE_INPUTS
    node_inputs: Sequence[str] = ("received_edges", "nodes", "globals")
    global_inputs: Sequence[str] = GLOBAL_INPUTS
    edge_to_node: str = "sum"
    edge_to_global: str = "sum"
    node_to_global: str = "sum"
    name: str = "graph_network"
    names: dict[str, str] = field(default_factory=lambda: {
        "nodes": "nodes", "edges": "edges", "senders": "senders", "receivers": "receivers", "globals": "globals"})

    def __post_init__(self) -> None:
        for what, allowed, given in (("edge_inputs", EDGE_INPUTS, self.edge_inputs),
                                     ("node_inputs", NODE_INPUTS, self.node_inputs),
                                     ("global_inputs", GLOBAL_INPUTS, self.global_inputs)):
            bad = [g for g in given if g not in allowed]
            if bad or not given:
                raise ExportError(f"GraphNetwork: {what}={list(given)}; choose a non-empty subset of {allowed}")
        for what in ("edge_to_node", "edge_to_global", "node_to_global"):
            if getattr(self, what) not in AGGREGATIONS:
                raise ExportError(f"GraphNetwork: {what}={getattr(self, what)!r}; choose one of {AGGREGATIONS}")
        for what in ("node_features", "edge_features", "global_features"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ExportError(f"GraphNetwork: {what} must be a non-negative int, got {v!r}")
        if self.edge_model is None and self.node_model is None and self.global_model is None:
            raise ExportError("GraphNetwork: give at least one of edge_model, node_model, global_model")


def graph_independent(edge_model: Any = None, node_model: Any = None, global_model: Any = None,
                      **sizes: Any) -> GraphNetwork:
    """Graph Nets' ``GraphIndependent``: each block sees only its own attribute."""
    return GraphNetwork(edge_model, node_model, global_model, edge_inputs=("edges",), node_inputs=("nodes",),
                        global_inputs=("globals",), **sizes)


# -- blocks to ONNX ----------------------------------------------------------------------------------

def _block_proto(model: Any, f_in: int, what: str, exporter: str = "auto") -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, os.PathLike, bytes, bytearray)):
        from .onnx import load_model

        return load_model(model)[0]
    mods = [c.__module__ or "" for c in type(model).__mro__]
    if any(m == "torch" or m.startswith("torch.") for m in mods):
        import torch

        from .torch import torch_to_onnx

        ex = torch.randn(2, f_in)
        return torch_to_onnx(model, (ex,), dynamic_batch=True, exporter="torchscript"
                             if isinstance(model, torch.jit.ScriptModule) else exporter)
    if any(m == "keras" or m.startswith("keras.") for m in mods):
        from .keras import keras_to_onnx

        return keras_to_onnx(model)
    raise ExportError(f"GraphNetwork {what}: a {type(model).__name__} is not a torch module, Keras model or ONNX model")


def _convert_opset(proto: onnx.ModelProto, what: str) -> onnx.ModelProto:
    if proto.functions:
        from onnx import inliner

        proto = inliner.inline_local_functions(proto)
    version = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), OPSET)
    if version != OPSET:
        try:
            from onnx import version_converter

            proto = version_converter.convert_version(proto, OPSET)
        except Exception as e:
            raise ExportError(f"GraphNetwork {what}: its ONNX opset {version} cannot be converted to {OPSET} "
                              f"({e}); export it with opset {OPSET}") from e
    return proto


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.opsets: dict[str, int] = {"": OPSET}
        self._k = 0

    def name(self, hint: str) -> str:
        self._k += 1
        return f"{hint}_{self._k}"

    def const(self, arr: Any, hint: str) -> str:
        n = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.require(np.asarray(arr), requirements="C"), n))
        return n

    def op(self, op_type: str, inputs: Sequence[str], hint: str = "", n_out: int = 1, **attrs: Any) -> Any:
        outs = [self.name(hint or op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.name(f"{hint or op_type}_node"),
                                           **attrs))
        return outs[0] if n_out == 1 else outs

    def splice(self, proto: onnx.ModelProto, x: str, prefix: str, f_in: int, what: str) -> tuple[str, int]:
        """Copy a block's graph in, reading ``x``; returns its output name and feature size."""
        proto = _convert_opset(proto, what)
        g = proto.graph
        inits = {t.name for t in g.initializer}
        ins = [vi for vi in g.input if vi.name not in inits]
        if len(ins) != 1 or len(g.output) != 1:
            raise ExportError(f"GraphNetwork {what}: the update function must have one input and one output, "
                              f"has {len(ins)} and {len(g.output)}")
        from .onnx import convert_model

        ir = convert_model(proto, what, {ins[0].name: ("B", f_in)})
        out_shape = ir.output_infos[0].shape
        if len(out_shape) != 2 or not isinstance(out_shape[1], int):
            raise ExportError(f"GraphNetwork {what}: the update function must map [B, {f_in}] to [B, F], "
                              f"it gives {[str(d) for d in out_shape]}")
        for o in proto.opset_import:
            dom = "" if o.domain == "ai.onnx" else o.domain
            if dom:
                self.opsets[dom] = max(self.opsets.get(dom, 0), int(o.version))
        mapping = {ins[0].name: x}

        def ren(n: str) -> str:
            if not n:
                return n
            if n not in mapping:
                mapping[n] = f"{prefix}/{n}"
            return mapping[n]

        for t in g.initializer:
            t2 = onnx.TensorProto()
            t2.CopyFrom(t)
            t2.name = ren(t.name)
            self.inits.append(t2)
        for n in g.node:
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
                raise ExportError(f"GraphNetwork {what}: control flow (If/Loop) inside an update function is "
                                  "not supported")
            n2 = onnx.NodeProto()
            n2.CopyFrom(n)
            del n2.input[:]
            del n2.output[:]
            n2.input.extend(ren(i) for i in n.input)
            n2.output.extend(ren(o) for o in n.output)
            n2.name = f"{prefix}/{n.name}" if n.name else self.name(f"{prefix}/node")
            self.nodes.append(n2)
        return ren(g.output[0].name), int(out_shape[1])

    # -- graph pieces -----------------------------------------------------------------------------
    def rows(self, x: str, like: str, width: int, hint: str) -> str:
        """Broadcast a [1, F] tensor to one row per row of ``like``."""
        n = self.op("Shape", [like], hint, start=0, end=1)
        shape = self.op("Concat", [n, self.const(np.array([width], np.int64), "w")], hint, axis=0)
        return self.op("Expand", [x, shape], hint)

    def segment(self, x: str, index: str, count_like: str, width: int, how: str, hint: str) -> str:
        """Aggregate the rows of ``x`` [e, F] into segments ``index`` [e] -> [n, F] (n = rows of count_like)."""
        n = self.op("Shape", [count_like], hint, start=0, end=1)
        shape = self.op("Concat", [n, self.const(np.array([width], np.int64), "w")], hint, axis=0)
        idx = self.op("Unsqueeze", [index, self.const(np.array([1], np.int64), "axis")], hint)
        zeros = self.op("ConstantOfShape", [shape], hint, value=numpy_helper.from_array(np.zeros(1, np.float32)))
        if how == "sum":
            return self.op("ScatterND", [zeros, idx, x], hint, reduction="add")
        ones = self.op("ConstantOfShape", [self.op("Shape", [index], hint)], hint,
                       value=numpy_helper.from_array(np.ones(1, np.float32)))
        count = self.op("ScatterND", [self.op("ConstantOfShape", [n], hint,
                                              value=numpy_helper.from_array(np.zeros(1, np.float32))), idx, ones],
                        hint, reduction="add")
        count = self.op("Unsqueeze", [count, self.const(np.array([1], np.int64), "axis")], hint)
        if how == "mean":
            total = self.op("ScatterND", [zeros, idx, x], hint, reduction="add")
            return self.op("Div", [total, self.op("Max", [count, self.const(np.float32(1), "one")], hint)], hint)
        lowest = self.op("ConstantOfShape", [shape], hint,
                         value=numpy_helper.from_array(np.array([np.finfo(np.float32).min], np.float32)))
        best = self.op("ScatterND", [lowest, idx, x], hint, reduction="max")
        empty = self.op("Equal", [count, self.const(np.float32(0), "zero")], hint)
        return self.op("Where", [empty, self.const(np.float32(0), "zero"), best], hint)

    def reduce_all(self, x: str, how: str, hint: str) -> str:
        """Aggregate all rows [r, F] -> [1, F] (zeros when there are no rows)."""
        axes = self.const(np.array([0], np.int64), "axes")
        if how == "sum":
            return self.op("ReduceSum", [x, axes], hint, keepdims=1)
        if how == "mean":
            rows = self.op("Cast", [self.op("Shape", [x], hint, start=0, end=1)], hint, to=TensorProto.FLOAT)
            total = self.op("ReduceSum", [x, axes], hint, keepdims=1)
            return self.op("Div", [total, self.op("Max", [rows, self.const(np.array([1], np.float32), "one")], hint)],
                           hint)
        pad = self.op("ConstantOfShape", [self.op("Concat", [self.const(np.array([1], np.int64), "one"),
                                                               self.op("Shape", [x], hint, start=1, end=2)],
                                                              hint, axis=0)],
                      hint, value=numpy_helper.from_array(np.array([np.finfo(np.float32).min], np.float32)))
        best = self.op("ReduceMax", [self.op("Concat", [x, pad], hint, axis=0), axes], hint, keepdims=1)
        empty = self.op("Equal", [best, self.const(np.float32(np.finfo(np.float32).min), "lowest")], hint)
        return self.op("Where", [empty, self.const(np.float32(0), "zero"), best], hint)


def gnn_to_onnx(gn: GraphNetwork, exporter: str = "auto") -> onnx.ModelProto:
    """The ONNX model of a :class:`GraphNetwork`: inputs nodes, edges, senders, receivers, globals;
    outputs the updated nodes, edges and globals. ``exporter`` is passed to the PyTorch importer
    for blocks given as torch modules."""
    if not isinstance(gn, GraphNetwork):
        raise ExportError(f"expected a GraphNetwork, got {type(gn).__name__}")
    b = _Builder()
    nm = gn.names
    v, e, snd, rcv, u = nm["nodes"], nm["edges"], nm["senders"], nm["receivers"], nm["globals"]
    fn, fe, fg = gn.node_features, gn.edge_features, gn.global_features
    inputs = [helper.make_tensor_value_info(v, TensorProto.FLOAT, ["nodes", fn]),
              helper.make_tensor_value_info(e, TensorProto.FLOAT, ["edges", fe]),
              helper.make_tensor_value_info(snd, TensorProto.INT64, ["edges"]),
              helper.make_tensor_value_info(rcv, TensorProto.INT64, ["edges"]),
              helper.make_tensor_value_info(u, TensorProto.FLOAT, [1, fg])]

    # 1. edge block
    e_out, fe_out = e, fe
    if gn.edge_model is not None:
        parts, width = [], 0
        for piece in gn.edge_inputs:
            if piece == "edges":
                parts.append(e)
                width += fe
            elif piece == "receivers":
                parts.append(b.op("Gather", [v, rcv], "receiver_nodes", axis=0))
                width += fn
            elif piece == "senders":
                parts.append(b.op("Gather", [v, snd], "sender_nodes", axis=0))
                width += fn
            else:
                parts.append(b.rows(u, e, fg, "edge_globals"))
                width += fg
        x = parts[0] if len(parts) == 1 else b.op("Concat", parts, "edge_block_in", axis=1)
        e_out, fe_out = b.splice(_block_proto(gn.edge_model, width, "edge_model", exporter), x, "edge_model", width,
                                 "edge_model")

    # 2. node block
    v_out, fn_out = v, fn
    if gn.node_model is not None:
        parts, width = [], 0
        for piece in gn.node_inputs:
            if piece == "received_edges":
                parts.append(b.segment(e_out, rcv, v, fe_out, gn.edge_to_node, "received_edges"))
                width += fe_out
            elif piece == "sent_edges":
                parts.append(b.segment(e_out, snd, v, fe_out, gn.edge_to_node, "sent_edges"))
                width += fe_out
            elif piece == "nodes":
                parts.append(v)
                width += fn
            else:
                parts.append(b.rows(u, v, fg, "node_globals"))
                width += fg
        x = parts[0] if len(parts) == 1 else b.op("Concat", parts, "node_block_in", axis=1)
        v_out, fn_out = b.splice(_block_proto(gn.node_model, width, "node_model", exporter), x, "node_model", width,
                                 "node_model")

    # 3. global block
    u_out = u
    if gn.global_model is not None:
        parts, width = [], 0
        for piece in gn.global_inputs:
            if piece == "edges":
                parts.append(b.reduce_all(e_out, gn.edge_to_global, "global_edges"))
                width += fe_out
            elif piece == "nodes":
                parts.append(b.reduce_all(v_out, gn.node_to_global, "global_nodes"))
                width += fn_out
            else:
                parts.append(u)
                width += fg
        x = parts[0] if len(parts) == 1 else b.op("Concat", parts, "global_block_in", axis=1)
        u_out, _ = b.splice(_block_proto(gn.global_model, width, "global_model", exporter), x, "global_model", width,
                            "global_model")

    outputs = []
    for src, dst in ((v_out, f"{v}_out"), (e_out, f"{e}_out"), (u_out, f"{u}_out")):
        b.nodes.append(helper.make_node("Identity", [src], [dst], name=b.name(f"{dst}_node")))
        outputs.append(helper.make_tensor_value_info(dst, TensorProto.FLOAT, None))
    graph = helper.make_graph(b.nodes, gn.name, inputs, outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, ver) for d, ver in b.opsets.items()],
                              producer_name="sofie_root.gnn")
    # senders and receivers index the nodes: RDataFrame functors check them per event
    helper.set_model_props(model, {INDICES_METADATA_KEY: json.dumps({snd: v, rcv: v})})
    return model


__all__ = ["AGGREGATIONS", "EDGE_INPUTS", "GLOBAL_INPUTS", "NODE_INPUTS", "GraphNetwork", "gnn_to_onnx",
           "graph_independent"]
