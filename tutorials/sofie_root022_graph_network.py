## \file
## \ingroup tutorial_sofie_root
## \notebook -nodraw
## A graph network over the tracks of an event (DeepMind Graph Nets style: edge, node and
## global blocks), compiled once and run on events with different numbers of tracks and edges.
##
## Each event is a graph: tracks are nodes (pt, eta, phi, d0), pairs of tracks closer than
## dR < 0.5 are edges (both directions), and the event has two global features. The edge, node
## and global update functions are small PyTorch MLPs; `sofie_root.frontends.gnn.GraphNetwork`
## wires them with sum/mean/max aggregations into one model whose node and edge counts are
## symbolic, so one compiled model serves every event. The results are checked against the same
## blocks evaluated in PyTorch, and the model goes through a .root file and back.
##
## Then the same model runs in an RDataFrame event loop over a TTree of tracks: the edges are
## built in RDataFrame (VecOps), and `sofie_root.rdf.define(..., variable=True)` feeds each
## event's graph from the RVec columns, its node and edge counts taken from the column lengths
## (no padding, which would bias the sums, means and maxima). The functor checks per event that
## senders and receivers index existing tracks. It returns the graph score (a float) and a
## per-track output (an RVecF of n_tracks x 8), on two threads; both are compared with PyTorch,
## and the score distribution is drawn.
##
## \macro_output
## \author sofie_root developers

from __future__ import annotations

import sys
import time

import awkward as ak
import numpy as np
import ROOT
import torch
import uproot

import sofie_root
from sofie_root import rdf
from sofie_root.frontends.gnn import GraphNetwork

FN, FE, FG = 4, 1, 2      # node (track), edge and global feature sizes


def event(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Tracks and the edges between nearby tracks (as senders -> receivers index lists)."""
    n = int(rng.integers(3, 40))
    tracks = np.stack([rng.exponential(2.0, n), rng.normal(0, 1.2, n), rng.uniform(-np.pi, np.pi, n),
                       rng.normal(0, 0.05, n)], axis=1).astype(np.float32)
    deta = tracks[:, None, 1] - tracks[None, :, 1]
    dphi = np.angle(np.exp(1j * (tracks[:, None, 2] - tracks[None, :, 2])))
    dr = np.sqrt(deta ** 2 + dphi ** 2)
    senders, receivers = np.nonzero((dr < 0.5) & ~np.eye(n, dtype=bool))
    edges = dr[senders, receivers][:, None].astype(np.float32)
    globals_ = np.array([[n / 20.0, float(tracks[:, 0].sum()) / 50.0]], np.float32)
    return tracks, edges, senders.astype(np.int64), receivers.astype(np.int64), globals_


def write_tracks(path: str, n_events: int, seed: int) -> None:
    """A TTree of events with a variable number of tracks (branches trk_pt, trk_eta, trk_phi,
    trk_d0), in two clusters so that two threads share the work."""
    rng = np.random.default_rng(seed)
    events = [event(rng)[0] for _ in range(n_events)]
    counts = np.array([len(t) for t in events])
    flat = np.concatenate(events)
    data = {"event": np.arange(n_events, dtype=np.int64),
            "trk": ak.zip({k: ak.unflatten(flat[:, j], counts) for j, k in enumerate(("pt", "eta", "phi", "d0"))})}
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: (v.type if k == "trk" else v.dtype) for k, v in data.items()})
        half = n_events // 2
        f["Events"].extend({k: v[:half] for k, v in data.items()})
        f["Events"].extend({k: v[half:] for k, v in data.items()})


# Edges between tracks closer than dR < 0.5, both directions, in the order event() makes them.
ROOT.gInterpreter.Declare("""
namespace gn_tutorial {
ROOT::RVecI pairs(const ROOT::RVecF &eta, const ROOT::RVecF &phi, bool senders)
{
   ROOT::RVecI out;
   for (std::size_t i = 0; i < eta.size(); ++i)
      for (std::size_t j = 0; j < eta.size(); ++j)
         if (i != j && ROOT::VecOps::DeltaR(eta[i], eta[j], phi[i], phi[j]) < 0.5f)
            out.push_back(senders ? int(i) : int(j));
   return out;
}
}
""")


def rdataframe_part(model, gn: GraphNetwork) -> bool:
    write_tracks("gn_tracks.root", 2000, seed=2)
    ROOT.EnableImplicitMT(2)
    df = ROOT.RDataFrame("Events", "gn_tracks.root")
    df = (df.Define("edge_src", "gn_tutorial::pairs(trk_eta, trk_phi, true)")
            .Define("edge_dst", "gn_tutorial::pairs(trk_eta, trk_phi, false)")
            .Define("edge_dr", "ROOT::VecOps::DeltaR(Take(trk_eta, edge_src), Take(trk_eta, edge_dst), "
                               "Take(trk_phi, edge_src), Take(trk_phi, edge_dst))")
            .Define("g_ntrk", "trk_pt.size() / 20.f").Define("g_sumpt", "Sum(trk_pt) / 50.f"))
    inputs = {"nodes": ["trk_pt", "trk_eta", "trk_phi", "trk_d0"], "edges": ["edge_dr"],
              "senders": ["edge_src"], "receivers": ["edge_dst"], "globals": ["g_ntrk", "g_sumpt"]}
    df = rdf.define(df, "score", model, inputs=inputs, outputs="globals_out", variable=True)  # float
    df = rdf.define(df, "trk_out", model, inputs=inputs, outputs="nodes_out", variable=True)  # RVecF, n x 8
    h = df.Histo1D(("score", "graph network over tracks;graph score;events", 50, 0.0, 0.0), "score")
    cols = ["event", "score", "trk_out", *inputs["nodes"], "edge_dr", "edge_src", "edge_dst", "g_ntrk", "g_sumpt"]
    out = df.AsNumpy(cols)  # the first loop also JIT-compiles RDataFrame's Define expressions and actions
    n = len(out["event"])
    t0 = time.perf_counter()
    df.Sum("score").GetValue()  # a second loop: building the graphs and running the model
    spent = time.perf_counter() - t0
    print(f"RDataFrame: {n} events, {min(len(x) for x in out['trk_pt'])}-{max(len(x) for x in out['trk_pt'])} "
          f"tracks and {min(len(x) for x in out['edge_dr'])}-{max(len(x) for x in out['edge_dr'])} edges per "
          f"event; {1e6 * spent / n:.0f} us per event on {df.GetNSlots()} slots (second loop)")

    worst = 0.0  # against PyTorch on the very graphs RDataFrame built
    for k in range(n):
        v = np.stack([np.asarray(out[c][k], np.float32) for c in inputs["nodes"]], axis=1)
        e = np.asarray(out["edge_dr"][k], np.float32).reshape(-1, 1)
        s, r = (np.asarray(out[c][k], np.int64) for c in ("edge_src", "edge_dst"))
        u = np.array([[out["g_ntrk"][k], out["g_sumpt"][k]]], np.float32)
        v2, _, u2 = torch_reference(gn, v, e, s, r, u)
        worst = max(worst, abs(float(out["score"][k]) - float(u2[0, 0])),
                    float(np.max(np.abs(np.asarray(out["trk_out"][k]) - v2.reshape(-1)))))
    print(f"max |RDataFrame - PyTorch| = {worst:.3g} (graph score and per-track outputs)")

    ROOT.gStyle.SetOptStat(0)
    c = ROOT.TCanvas("c", "", 700, 500)
    h.SetLineColor(ROOT.kBlue + 1)
    h.Draw("hist")
    c.SaveAs("sofie_root022_graph_network.png")
    ROOT.DisableImplicitMT()
    return worst < 1e-4


def mlp(f_in: int, f_out: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(f_in, 32), torch.nn.ReLU(), torch.nn.Linear(32, f_out)).eval()


def torch_reference(gn: GraphNetwork, v, e, s, r, u):
    """The same graph network written with torch operations."""
    v, e, s, r, u = (torch.from_numpy(a) for a in (v, e, s, r, u))
    with torch.no_grad():
        e2 = gn.edge_model(torch.cat([e, v[r], v[s], u.expand(len(e), -1)], 1))
        agg = torch.zeros(len(v), e2.shape[1]).index_add(0, r, e2)                       # sum over received edges
        v2 = gn.node_model(torch.cat([agg, v, u.expand(len(v), -1)], 1))
        e_mean = e2.mean(0, keepdim=True) if len(e2) else torch.zeros(1, e2.shape[1])  # mean over edges
        u2 = gn.global_model(torch.cat([e_mean, v2.max(0, keepdim=True).values, u], 1))  # max over nodes
    return v2.numpy(), e2.numpy(), u2.numpy()


def main() -> int:
    torch.manual_seed(0)
    gn = GraphNetwork(edge_model=mlp(FE + 2 * FN + FG, 8), node_model=mlp(8 + FN + FG, 8),
                      global_model=mlp(8 + 8 + FG, 1), node_features=FN, edge_features=FE, global_features=FG,
                      edge_to_node="sum", edge_to_global="mean", node_to_global="max")
    t0 = time.perf_counter()
    model = sofie_root.compile(gn)
    print(model)
    print(f"compiled in {time.perf_counter() - t0:.1f} s")

    rng = np.random.default_rng(1)
    events = [event(rng) for _ in range(200)]
    worst, spent = 0.0, 0.0
    for ev in events:
        t0 = time.perf_counter()
        nodes, edges, glob = model.infer(*ev)
        spent += time.perf_counter() - t0
        for got, ref in zip((nodes, edges, glob), torch_reference(gn, *ev)):
            worst = max(worst, float(np.max(np.abs(got - ref))) if got.size else 0.0)
    sizes = [(len(ev[0]), len(ev[1])) for ev in events]
    print(f"{len(events)} events, {min(s[0] for s in sizes)}-{max(s[0] for s in sizes)} tracks and "
          f"{min(s[1] for s in sizes)}-{max(s[1] for s in sizes)} edges per event; "
          f"{1e6 * spent / len(events):.0f} us per event from Python")
    print(f"max |sofie_root - PyTorch| = {worst:.3g}")

    model.save("graph_network.root", "tracks_gn", overwrite=True)
    loaded = sofie_root.load("graph_network.root")
    same = all(np.array_equal(a, b) for a, b in zip(loaded.infer(*events[0]), model.infer(*events[0])))
    print(f"reloaded from graph_network.root: identical outputs = {same}")
    rdf_ok = rdataframe_part(loaded, gn)
    return 0 if worst < 1e-4 and same and rdf_ok else 1


if __name__ == "__main__":
    sys.exit(main())
