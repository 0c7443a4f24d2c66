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
## \macro_output
## \author sofie_root developers

from __future__ import annotations

import sys
import time

import numpy as np
import torch

import sofie_root
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
    return 0 if worst < 1e-4 and same else 1


if __name__ == "__main__":
    sys.exit(main())
