"""Graph networks in RDataFrame: node and edge counts bound per event from RVec column lengths
(``variable=True``), no padding; a Graph Nets style GraphNetwork and a message-passing GNN exported
from PyTorch, checked against torch and against ``model.infer`` per event, with and without
implicit MT, plus the per-event errors (mismatched lengths, indices out of range)."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import ROOT
import sofie_root.rdf as srdf
import uproot

import sofie_root
from sofie_root import SofieError
from sofie_root.frontends.gnn import GraphNetwork

torch = pytest.importorskip("torch")
nn = torch.nn

RTOL, ATOL = 1e-4, 1e-5
N_EVENTS = 120
# the first events: an empty graph, one node without edges, one node with a self-loop
FIXED_SIZES = [(0, 0), (1, 0), (1, 1), (2, 0), (3, 6)]

NODE_COLS = ["node_pt", "node_eta", "node_phi"]  # float, double, float
GN_INPUTS = {"nodes": NODE_COLS, "edges": ["edge_dr"], "senders": ["edge_src"], "receivers": ["edge_dst"],
             "globals": ["gx", "gy"]}


def jagged(lists: list[np.ndarray]) -> ak.Array:
    """Per-event arrays as one jagged array keeping their dtype."""
    return ak.unflatten(np.concatenate(lists), [len(x) for x in lists])


def make_graphs(n_events: int, seed: int = 3) -> ak.Array:
    rng = np.random.default_rng(seed)
    sizes = list(FIXED_SIZES)
    while len(sizes) < n_events:
        n = int(rng.integers(1, 25))
        sizes.append((n, int(rng.integers(0, 3 * n + 1))))
    node = {"pt": [], "eta": [], "phi": []}
    edge = {"dr": [], "src": [], "dst": []}
    for n, m in sizes:
        node["pt"].append(rng.exponential(3.0, n).astype(np.float32))
        node["eta"].append(rng.normal(0, 1.5, n))
        node["phi"].append(rng.uniform(-3, 3, n).astype(np.float32))
        edge["dr"].append(rng.uniform(0, 1, m).astype(np.float32))
        edge["src"].append(rng.integers(0, max(n, 1), m).astype(np.int32))
        edge["dst"].append(rng.integers(0, max(n, 1), m).astype(np.int32))
    return ak.Array({
        "event": np.arange(len(sizes), dtype=np.int64),
        "gx": rng.normal(0, 1, len(sizes)).astype(np.float32),
        "gy": rng.normal(0, 1, len(sizes)),
        "node": ak.zip({k: jagged(v) for k, v in node.items()}),
        "edge": ak.zip({k: jagged(v) for k, v in edge.items()}),
    })


@pytest.fixture(scope="module")
def graphs():
    return make_graphs(N_EVENTS)


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory, graphs):
    """A TTree with 3 clusters (one per extend), so that implicit MT splits it."""
    path = tmp_path_factory.mktemp("gnn") / "graphs.root"
    fields = {k: graphs[k] for k in ak.fields(graphs)}
    with uproot.recreate(path) as f:
        f.mktree("Graphs", {k: (v.type if k in ("node", "edge") else v.to_numpy().dtype) for k, v in fields.items()})
        step = -(-len(graphs) // 3)
        for s in range(0, len(graphs), step):
            f["Graphs"].extend({k: v[s:s + step] for k, v in fields.items()})
    return str(path)


def event_arrays(graphs, i: int):
    """nodes [n, 3], edges [m, 1], senders, receivers [m] int64, globals [1, 2], as numpy."""
    g = graphs[i]
    nodes = np.stack([np.asarray(g.node[k], dtype=np.float32) for k in ("pt", "eta", "phi")], axis=1)
    nodes = nodes.reshape(-1, 3)
    edges = np.asarray(g.edge.dr, dtype=np.float32).reshape(-1, 1)
    return (nodes, edges, np.asarray(g.edge.src, dtype=np.int64), np.asarray(g.edge.dst, dtype=np.int64),
            np.array([[g.gx, g.gy]], dtype=np.float32))


def single_and_multi_thread(run):
    """``run()`` once without and once with EnableImplicitMT(2)."""
    st = run()
    ROOT.EnableImplicitMT(2)
    try:
        return st, run()
    finally:
        ROOT.DisableImplicitMT()


def run_sorted(df, names: list[str]) -> dict[str, list[np.ndarray]]:
    """Columns as lists of float32 arrays, in event order (implicit MT changes the entry order)."""
    out = df.AsNumpy(["event", *names])
    order = np.argsort(out["event"])
    return {n: [np.asarray(out[n][k], dtype=np.float32).reshape(-1) for k in order] for n in names}


# -- a Graph Nets style graph network with all three blocks -------------------------------------------

def mlp(f_in: int, f_out: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(f_in, 16), nn.Tanh(), nn.Linear(16, f_out)).eval()


def make_gn() -> GraphNetwork:
    fn, fe, fg = 3, 1, 2
    return GraphNetwork(edge_model=mlp(fe + 2 * fn + fg, 4, 1), node_model=mlp(4 + 4 + fn + fg, 5, 2),
                        global_model=mlp(4 + 5 + fg, 2, 3), node_features=fn, edge_features=fe, global_features=fg,
                        node_inputs=("received_edges", "sent_edges", "nodes", "globals"),
                        edge_to_node="mean", edge_to_global="sum", node_to_global="max")


def gn_reference(gn: GraphNetwork, v, e, s, r, u):
    """The graph network written with torch operations: (nodes', edges', globals')."""
    v, e, s, r, u = (torch.from_numpy(a) for a in (v, e, s, r, u))
    n = len(v)
    with torch.no_grad():
        e2 = gn.edge_model(torch.cat([e, v[r], v[s], u.expand(len(e), -1)], 1))

        def mean(index):
            total = torch.zeros(n, e2.shape[1]).index_add(0, index, e2)
            count = torch.zeros(n).index_add(0, index, torch.ones(len(index)))[:, None]
            return total / count.clamp(min=1)

        v2 = gn.node_model(torch.cat([mean(r), mean(s), v, u.expand(n, -1)], 1))
        e_sum = e2.sum(0, keepdim=True)
        v_max = v2.max(0, keepdim=True).values if n else torch.zeros(1, v2.shape[1])
        u2 = gn.global_model(torch.cat([e_sum, v_max, u], 1))
    return v2.numpy(), e2.numpy(), u2.numpy()


@pytest.fixture(scope="module")
def gn_model():
    gn = make_gn()
    return gn, sofie_root.compile(gn, exporter="torchscript")


def test_graph_network_per_event_matches_torch_and_infer(gn_model, graph_file, graphs):
    gn, model = gn_model
    outputs = ("nodes_out", "edges_out", "globals_out")

    def run():
        df = ROOT.RDataFrame("Graphs", graph_file)
        for name in outputs:
            df = srdf.define(df, name, model, inputs=GN_INPUTS, outputs=name, variable=True)
        f = srdf.functor(model, inputs=GN_INPUTS, outputs=["globals_out", "nodes_out"], variable=True, df=df)
        df = df.Define("both", f, f.columns)
        return run_sorted(df, [*outputs, "both"])

    st, mt = single_and_multi_thread(run)
    assert len(st["nodes_out"]) == N_EVENTS
    for i in range(N_EVENTS):
        ins = event_arrays(graphs, i)
        n, m = len(ins[0]), len(ins[1])
        ref = gn_reference(gn, *ins)
        own = model.infer(*ins)
        for k, name in enumerate(outputs):
            got = st[name][i]
            assert got.shape == (ref[k].size,), (i, name, n, m)
            np.testing.assert_allclose(got, ref[k].reshape(-1), rtol=RTOL, atol=ATOL, err_msg=f"event {i} {name}")
            np.testing.assert_allclose(got, own[k].reshape(-1), rtol=RTOL, atol=ATOL, err_msg=f"event {i} {name}")
            assert np.array_equal(got, mt[name][i]), (i, name)
        assert np.array_equal(st["both"][i], np.concatenate([st["globals_out"][i], st["nodes_out"][i]]))
        assert np.array_equal(st["both"][i], mt["both"][i])
    assert [len(x) for x in st["nodes_out"][:len(FIXED_SIZES)]] == [5 * n for n, _ in FIXED_SIZES]
    assert [len(x) for x in st["edges_out"][:len(FIXED_SIZES)]] == [4 * m for _, m in FIXED_SIZES]


def test_columnar_evaluate_matches_the_functor(gn_model, graph_file):
    _, model = gn_model
    flat = uproot.open(f"{graph_file}:Graphs").arrays()  # branches node_pt, ..., as RDataFrame sees them
    got = srdf.evaluate(model, flat, inputs=GN_INPUTS, outputs="nodes_out", variable=True)
    df = srdf.define(ROOT.RDataFrame("Graphs", graph_file), "y", model, inputs=GN_INPUTS, outputs="nodes_out",
                     variable=True)
    ref = run_sorted(df, ["y"])["y"]
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_buffers_stop_growing_and_one_session_per_slot(gn_model, graph_file):
    _, model = gn_model
    df = ROOT.RDataFrame("Graphs", graph_file)
    f = srdf.functor(model, inputs=GN_INPUTS, outputs="nodes_out", variable=True, df=df, slot=True)
    assert f.plan.variable and f.plan.return_type == "ROOT::RVecF"
    d = df.DefineSlot("y", f, f.columns).Define("s", "Sum(y)")
    d.Sum("s").GetValue()
    first = f.allocations()
    assert f.sessions() == 1 and 0 < first < N_EVENTS // 4
    df.DefineSlot("y", f, f.columns).Define("s", "Sum(y)").Sum("s").GetValue()  # the same sizes again
    assert f.allocations() == first


def test_columns_spelled_per_group(gn_model, graph_file):
    """Columns(variable=True) per group and explicit index_of give the same as functor(variable=True)."""
    _, model = gn_model
    df = ROOT.RDataFrame("Graphs", graph_file)
    inputs = {"nodes": srdf.Columns(NODE_COLS, variable=True), "edges": srdf.Columns("edge_dr", variable=True),
              "senders": srdf.Columns("edge_src", index_of="nodes"),
              "receivers": srdf.Columns("edge_dst", index_of="nodes"), "globals": ["gx", "gy"]}
    a = srdf.functor(model, inputs=inputs, outputs="globals_out", df=df)
    b = srdf.functor(model, inputs=GN_INPUTS, outputs="globals_out", df=df, variable=True)
    assert [p.index_of for p in a.plan.inputs] == [p.index_of for p in b.plan.inputs] == [-1, -1, 0, 0, -1]
    out = run_sorted(df.Define("a", a, a.columns).Define("b", b, b.columns), ["a", "b"])
    assert all(np.array_equal(x, y) for x, y in zip(out["a"], out["b"]))


# -- a message-passing GNN exported from PyTorch (Gather, ScatterElements, GatherElements) -------------

class MessagePassing(nn.Module):
    def __init__(self, f: int = 3, h: int = 8):
        super().__init__()
        self.msg = nn.Sequential(nn.Linear(2 * f, h), nn.ReLU())
        self.upd = nn.Linear(f + h, h)
        self.out = nn.Linear(h, 1)

    def forward(self, x, edge_index):
        src, dst = edge_index[0], edge_index[1]
        m = self.msg(torch.cat([x[dst], x[src] - x[dst]], 1))
        agg = torch.zeros(x.shape[0], m.shape[1]).scatter_add(0, dst[:, None].expand_as(m), m)
        h = torch.relu(self.upd(torch.cat([x, agg], 1)))
        nb = torch.gather(h, 0, src[:, None].expand(-1, h.shape[1]))
        return torch.sigmoid(self.out(h + torch.zeros_like(h).scatter_add(0, dst[:, None].expand_as(nb), nb)))


def test_message_passing_gnn_from_pytorch(graph_file, graphs):
    torch.manual_seed(4)
    net = MessagePassing().eval()
    x, ei = torch.randn(6, 3), torch.randint(0, 6, (2, 10))
    model = sofie_root.compile(net, example_inputs=(x, ei), dynamic_batch=False, exporter="torchscript",
                               dynamic_dims={0: {0: "nodes"}, 1: {1: "edges"}}, input_names=["x", "edge_index"])
    assert model.inputs[1].shape == (2, "edges")
    inputs = {"x": srdf.Columns(NODE_COLS, variable=True),
              "edge_index": srdf.Columns(["edge_src", "edge_dst"], index_of="x")}

    def run():
        df = ROOT.RDataFrame("Graphs", graph_file)
        return run_sorted(srdf.define(df, "score", model, inputs=inputs), ["score"])["score"]

    st, mt = single_and_multi_thread(run)
    checked = 0
    for i in range(N_EVENTS):
        v, _, s, r, _ = event_arrays(graphs, i)
        assert np.array_equal(st[i], mt[i])
        ei = np.stack([s, r])
        own = model.infer(v, ei)[0].reshape(-1)
        np.testing.assert_allclose(st[i], own, rtol=RTOL, atol=ATOL, err_msg=f"event {i}")
        if len(v):
            with torch.no_grad():
                ref = net(torch.from_numpy(v), torch.from_numpy(ei)).numpy().reshape(-1)
            np.testing.assert_allclose(st[i], ref, rtol=RTOL, atol=ATOL, err_msg=f"event {i}")
            checked += 1
    assert checked == N_EVENTS - 1  # all but the empty graph (torch's scatter needs a node)


# -- errors ------------------------------------------------------------------------------------------

def small_df(**overrides):
    cols = {"pt": "ROOT::RVecF(3, 1.f)", "eta": "ROOT::RVecD(3, 0.5)", "phi": "ROOT::RVecF(3, 0.1f)",
            "dr": "ROOT::RVecF(2, 0.2f)", "src": "ROOT::RVecI{0, 1}", "dst": "ROOT::RVecI{2, 1}",
            "gx": "1.f", "gy": "2.0"}
    cols.update(overrides)
    df = ROOT.RDataFrame(2)
    for k, v in cols.items():
        df = df.Define(k, v)
    return df


SMALL = {"nodes": ["pt", "eta", "phi"], "edges": ["dr"], "senders": ["src"], "receivers": ["dst"],
         "globals": ["gx", "gy"]}


def run_small(model, df, output="globals_out"):
    d = srdf.define(df, "y", model, inputs=SMALL, outputs=output, variable=True)
    return d.Define("s", "Sum(y)").Sum("s").GetValue()


def test_small_graph_runs(gn_model):
    gn, model = gn_model
    got = run_small(model, small_df())
    v = np.stack([np.ones(3), np.full(3, .5), np.full(3, .1)], 1).astype(np.float32)
    ref = gn_reference(gn, v, np.full((2, 1), .2, np.float32), np.array([0, 1]), np.array([2, 1]),
                       np.array([[1, 2]], np.float32))[2]
    assert got == pytest.approx(2 * float(ref.sum()), rel=1e-4)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"eta": "ROOT::RVecD(rdfentry_ + 2, 0.5)"},
     r"column 'eta' \(input 'nodes'\) has 2 elements, but column 'pt' \(input 'nodes'\) has 3 .*'nodes'"),
    ({"src": "ROOT::RVecI{0}"},
     r"column 'src' \(input 'senders'\) has 1 elements, but column 'dr' \(input 'edges'\) has 2 .*'edges'"),
    ({"dst": "ROOT::RVecI{2, 3}"},
     r"column 'dst' \(input 'receivers'\) has the value 3 at position 1, outside \[0, 3\): input 'nodes' has 3"),
    ({"src": "ROOT::RVecI{-1, 0}"}, r"column 'src' \(input 'senders'\) has the value -1 at position 0"),
])
def test_bad_events_stop_the_loop_with_a_clear_error(gn_model, overrides, message):
    _, model = gn_model
    with pytest.raises(Exception, match=message):
        run_small(model, small_df(**overrides))


def test_bad_event_under_implicit_mt(gn_model):
    _, model = gn_model
    ROOT.EnableImplicitMT(2)
    try:
        df = ROOT.RDataFrame(5000)
        for k, v in {"pt": "ROOT::RVecF(3, 1.f)", "eta": "ROOT::RVecD(3, 0.5)", "phi": "ROOT::RVecF(3, 0.1f)",
                     "dr": "ROOT::RVecF(2, 0.2f)", "src": "ROOT::RVecI{0, 1}", "gx": "1.f", "gy": "2.0",
                     "dst": "rdfentry_ == 4321 ? ROOT::RVecI{2, 9} : ROOT::RVecI{2, 1}"}.items():
            df = df.Define(k, v)
        with pytest.raises(Exception, match=r"column 'dst' \(input 'receivers'\) has the value 9 at position 1"):
            run_small(model, df)
    finally:
        ROOT.DisableImplicitMT()


def test_errors_at_definition(gn_model):
    _, model = gn_model
    df = small_df()
    with pytest.raises(SofieError, match="variable=True"):  # the symbolic node count needs binding
        srdf.functor(model, inputs=SMALL, outputs="globals_out", df=df)
    with pytest.raises(SofieError, match="also fixed to 4"):
        srdf.functor(model, inputs=SMALL, outputs="globals_out", df=df, variable=True, dims={"nodes": 4})
    with pytest.raises(SofieError, match="sort_by cannot"):
        srdf.Columns(["pt"], variable=True, sort_by="pt")
    with pytest.raises(SofieError, match="index_of='globals' must name a model input fed by variable"):
        srdf.functor(model, inputs={**SMALL, "senders": srdf.Columns("src", index_of="globals")},
                     outputs="globals_out", df=df, variable=True)
    with pytest.raises(SofieError, match="takes collection"):
        srdf.functor(model, inputs={**SMALL, "globals": srdf.Columns(["gx", "gy"], variable=True)},
                     outputs="globals_out", df=df, variable=True)


def test_distributed_rdataframe(gn_model, graph_file):
    """On a local Dask cluster: the graph network (built in memory) reaches the workers as generated
    code and weights, and the per-node outputs equal the local run."""
    distributed = pytest.importorskip("distributed")
    _, model = gn_model
    local = run_sorted(srdf.define(ROOT.RDataFrame("Graphs", graph_file), "y", model, inputs=GN_INPUTS,
                                   outputs="nodes_out", variable=True), ["y"])["y"]
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        ddf = ROOT.RDataFrame("Graphs", graph_file, executor=client, npartitions=2)
        dist = run_sorted(srdf.define(ddf, "y", model, inputs=GN_INPUTS, outputs="nodes_out", variable=True),
                          ["y"])["y"]
    finally:
        client.close()
        cluster.close()
    assert len(dist) == len(local) == N_EVENTS
    assert all(np.array_equal(a, b) for a, b in zip(dist, local))


def test_functor_level_variable_leaves_fixed_inputs_padded(tagger_path, data_file):
    """functor(variable=True) only unpads inputs with a symbolic length: a fixed-P tagger's
    particles are padded as before, its scalar jet columns stay [1, F]."""
    df = ROOT.RDataFrame("Events", data_file)
    inputs = {"particles": ["pf_pt", "pf_eta", "pf_phi"], "jet": ["jet_pt", "jet_eta"]}
    a = srdf.functor(tagger_path, inputs=inputs, outputs="probs", df=df, variable=True)
    b = srdf.functor(tagger_path, inputs=inputs, outputs="probs", df=df)
    assert not a.plan.variable and [p.kind for p in a.plan.inputs] == ["jagged", "scalar"]
    out = df.Define("ya", a, a.columns).Define("yb", b, b.columns).AsNumpy(["ya", "yb"])
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(out["ya"], out["yb"]))


def test_particle_set_with_batch_dimension(rdf_dir, data_file, events):
    """[N, P, F] with symbolic P: variable=True sums over all of an event's particles, unpadded."""
    from . import models
    from .conftest import flat_events

    path = models.symbolic_particles(rdf_dir / "sym_var.onnx")
    df = ROOT.RDataFrame("Events", data_file)
    f = srdf.functor(path, ["pf_pt", "pf_eta"], df=df, variable=True)
    assert [p.layout for p in f.plan.inputs] == ["PF"] and f.plan.return_type == "ROOT::RVecF"
    got = np.array([np.asarray(v) for v in df.Define("y", f, f.columns).AsNumpy(["y"])["y"]])
    flat = flat_events(events)
    ref = np.array([[np.sum(np.asarray(p, np.float32)), np.sum(np.asarray(e, np.float32))]
                    for p, e in zip(flat.pf_pt.tolist(), flat.pf_eta.tolist())], np.float32)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
