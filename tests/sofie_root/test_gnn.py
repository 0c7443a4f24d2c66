"""Graph networks (Graph Nets style blocks) and message-passing GNNs exported from PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import sofie_root
from sofie_root.frontends.gnn import GraphNetwork, graph_independent

torch = pytest.importorskip("torch")
nn = torch.nn

RTOL, ATOL = 1e-4, 1e-5
FN, FE, FG = 4, 3, 2


def mlp(f_in: int, f_out: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(f_in, 16), nn.ReLU(), nn.Linear(16, f_out), nn.LayerNorm(f_out)).eval()


def aggregate(x, index, n: int, how: str):
    """Reference segment aggregation; empty segments give zeros."""
    out = torch.zeros(n, x.shape[1])
    if how == "sum":
        return out.index_add(0, index, x)
    count = torch.zeros(n).index_add(0, index, torch.ones(len(index)))[:, None]
    if how == "mean":
        return out.index_add(0, index, x) / count.clamp(min=1)
    best = torch.full((n, x.shape[1]), -torch.inf).scatter_reduce(0, index[:, None].expand_as(x), x, "amax")
    return torch.where(count > 0, best, out)


def reduce_all(x, how: str):
    if x.shape[0] == 0:
        return torch.zeros(1, x.shape[1])
    return {"sum": x.sum(0, keepdim=True), "mean": x.mean(0, keepdim=True),
            "max": x.max(0, keepdim=True).values}[how]


def reference(gn: GraphNetwork, v, e, s, r, u):
    with torch.no_grad():
        e2 = gn.edge_model(torch.cat([e, v[r], v[s], u.expand(len(e), -1)], 1))
        parts = [aggregate(e2, r, len(v), gn.edge_to_node)]
        if "sent_edges" in gn.node_inputs:
            parts.append(aggregate(e2, s, len(v), gn.edge_to_node))
        v2 = gn.node_model(torch.cat([*parts, v, u.expand(len(v), -1)], 1))
        u2 = gn.global_model(torch.cat([reduce_all(e2, gn.edge_to_global), reduce_all(v2, gn.node_to_global), u], 1))
    return v2, e2, u2


def event(n: int, m: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, FN, generator=g), torch.randn(m, FE, generator=g),
            torch.randint(0, n, (m,), generator=g), torch.randint(0, n, (m,), generator=g),
            torch.randn(1, FG, generator=g))


def make_gn(agg: str, sent: bool = False) -> GraphNetwork:
    fe2, fn2 = 5, 6
    node_in = ("received_edges", "sent_edges", "nodes", "globals") if sent else ("received_edges", "nodes", "globals")
    return GraphNetwork(
        edge_model=mlp(FE + 2 * FN + FG, fe2, 1),
        node_model=mlp(fe2 * (2 if sent else 1) + FN + FG, fn2, 2),
        global_model=mlp(fe2 + fn2 + FG, 3, 3),
        node_features=FN, edge_features=FE, global_features=FG, node_inputs=node_in,
        edge_to_node=agg, edge_to_global=agg, node_to_global=agg)


@pytest.mark.parametrize("agg", ["sum", "mean", "max"])
def test_graph_network_all_blocks(agg) -> None:
    gn = make_gn(agg, sent=agg == "mean")
    assert isinstance(gn, sofie_root.GraphNetwork)
    model = sofie_root.compile(gn, exporter="torchscript" if agg != "sum" else "dynamo")
    assert [i.name for i in model.inputs] == ["nodes", "edges", "senders", "receivers", "globals"]
    assert model.inputs[0].shape == ("nodes", FN) and model.inputs[1].shape == ("edges", FE)
    # events of different sizes, including a single node without edges into most nodes
    for k, (n, m) in enumerate([(1, 1), (5, 3), (12, 40), (30, 7)]):
        ins = event(n, m, k)
        got = model.infer(*[t.numpy() for t in ins])
        for g_, r_ in zip(got, reference(gn, *ins)):
            assert g_.shape == tuple(r_.shape)
            np.testing.assert_allclose(g_, r_.numpy(), rtol=RTOL, atol=ATOL)


def test_graph_independent_and_onnx_blocks(tmp_path) -> None:
    import onnx

    from sofie_root.frontends.torch import torch_to_onnx

    node = mlp(FN, 3, 4)
    proto = torch_to_onnx(node, (torch.randn(2, FN),), exporter="torchscript")
    path = tmp_path / "node.onnx"
    onnx.save(proto, path)
    edge = mlp(FE, 2, 5)
    gn = graph_independent(edge_model=edge, node_model=str(path), node_features=FN, edge_features=FE,
                           global_features=FG)
    model = sofie_root.compile(gn)
    v, e, s, r, u = event(6, 9, 0)
    v2, e2, u2 = model.infer(v.numpy(), e.numpy(), s.numpy(), r.numpy(), u.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(v2, node(v).numpy(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(e2, edge(e).numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(u2, u.numpy())


def test_keras_blocks() -> None:
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    edge = keras.Sequential([keras.Input((FE + 2 * FN + FG,)), keras.layers.Dense(4, activation="relu")])
    gn = GraphNetwork(edge_model=edge, node_features=FN, edge_features=FE, global_features=FG)
    model = sofie_root.compile(gn)
    v, e, s, r, u = event(4, 6, 1)
    x = torch.cat([e, v[r], v[s], u.expand(len(e), -1)], 1).numpy()
    ref = edge(x).detach().cpu().numpy()
    np.testing.assert_allclose(model.infer(v.numpy(), e.numpy(), s.numpy(), r.numpy(), u.numpy())[1], ref,
                               rtol=RTOL, atol=ATOL)


def test_bad_configurations() -> None:
    with pytest.raises(sofie_root.ExportError, match="edge_to_node"):
        GraphNetwork(edge_model=mlp(2, 2, 0), edge_to_node="median")
    with pytest.raises(sofie_root.ExportError, match="node_inputs"):
        GraphNetwork(node_model=mlp(2, 2, 0), node_inputs=("edges",))
    gn = GraphNetwork(edge_model=mlp(5, 2, 0), node_features=FN, edge_features=FE, global_features=FG)
    with pytest.raises(sofie_root.SofieError):  # the MLP takes 5 features, the edge block gives 13
        sofie_root.compile(gn)


def test_out_of_range_node_index_is_an_error() -> None:
    model = sofie_root.compile(make_gn("sum"), exporter="torchscript")
    v, e, s, r, u = event(3, 4, 2)
    r[0] = 7
    with pytest.raises(sofie_root.SofieError):
        model.infer(v.numpy(), e.numpy(), s.numpy(), r.numpy(), u.numpy())


class MessagePassing(nn.Module):
    """A plain message-passing layer written with index_add_/scatter and gather (as in PyG)."""

    def __init__(self, f: int = FN, h: int = 8):
        super().__init__()
        self.msg = nn.Sequential(nn.Linear(2 * f, h), nn.ReLU())
        self.upd = nn.Linear(f + h, h)
        self.out = nn.Linear(h, 1)

    def forward(self, x, edge_index):
        src, dst = edge_index[0], edge_index[1]
        m = self.msg(torch.cat([x[dst], x[src] - x[dst]], 1))                  # Gather
        # (the TorchScript exporter turns index_add into a ScatterElements without reduction, which is
        # wrong for repeated indices; scatter_add is exported correctly by both exporters)
        agg = torch.zeros(x.shape[0], m.shape[1]).scatter_add(0, dst[:, None].expand_as(m), m)  # ScatterElements
        mx = torch.zeros(x.shape[0], m.shape[1]).scatter_reduce(0, dst[:, None].expand_as(m), m, "amax",
                                                               include_self=True)
        h = torch.relu(self.upd(torch.cat([x, agg + mx], 1)))
        nb = torch.gather(h, 0, src[:, None].expand(-1, h.shape[1]))            # GatherElements
        return torch.sigmoid(self.out(h + torch.zeros_like(h).scatter_add(0, dst[:, None].expand_as(nb), nb)))


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_message_passing_exported_from_pytorch(exporter) -> None:
    torch.manual_seed(9)
    m = MessagePassing().eval()
    x, ei = torch.randn(6, FN), torch.randint(0, 6, (2, 10))
    model = sofie_root.compile(m, example_inputs=(x, ei), dynamic_batch=False, exporter=exporter,
                               dynamic_dims={0: {0: "nodes"}, 1: {1: "edges"}}, input_names=["x", "edge_index"])
    assert model.inputs[0].shape == ("nodes", FN) and model.inputs[1].shape == (2, "edges")
    for k, (n, e) in enumerate([(1, 1), (7, 20), (25, 60)]):
        g = torch.Generator().manual_seed(k)
        x, ei = torch.randn(n, FN, generator=g), torch.randint(0, n, (2, e), generator=g)
        with torch.no_grad():
            ref = m(x, ei).numpy()
        np.testing.assert_allclose(model(x.numpy(), ei.numpy()), ref, rtol=RTOL, atol=ATOL)


def test_save_and_load_round_trip(tmp_path) -> None:
    gn = make_gn("mean", sent=True)
    model = sofie_root.compile(gn, exporter="torchscript")
    path = tmp_path / "gnn.root"
    model.save(path, "gnn")
    loaded = sofie_root.load(path)
    ins = [t.numpy() for t in event(9, 17, 3)]
    for a, b in zip(loaded.infer(*ins), model.infer(*ins)):
        np.testing.assert_array_equal(a, b)
