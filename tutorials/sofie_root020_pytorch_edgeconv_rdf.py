## \file
## \ingroup tutorial_sofie_root
## \notebook -nodraw
## A PyTorch ParticleNet-style EdgeConv jet tagger, compiled straight from the nn.Module and run
## inside an RDataFrame event loop on per-particle RVec columns.
##
## No ONNX file is written by hand: `sofie_root.compile(net, example_inputs=...)` exports the
## module through torch.onnx (dynamo), keeps the batch dimension symbolic and compiles it. The
## k-nearest-neighbour search (TopK on pairwise distances, then Gather) runs in the generated C++.
## The model is saved to a .root file with its column names and used by `rdf.define`
## on two threads; the scores are compared with PyTorch itself on the same padded particles.
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

P, K = 16, 4
FEATURES = ["pf_pt", "pf_eta", "pf_phi"]
POINTS = ["pf_eta", "pf_phi"]


def make_jets(path: str, n: int, seed: int) -> None:
    """Signal jets: few hard, collimated particles; background: more, softer, wider ones."""
    rng = np.random.default_rng(seed)
    signal = rng.integers(0, 2, n).astype(np.int32)
    counts = np.where(signal == 1, rng.poisson(7, n), rng.poisson(13, n)) + 2
    total = int(counts.sum())
    sig_p = np.repeat(signal, counts) == 1
    width = np.where(sig_p, 0.08, 0.25)
    particles = ak.zip({
        "pt": ak.unflatten(np.where(sig_p, rng.exponential(1.2, total), rng.exponential(0.5, total))
                           .astype(np.float32), counts),
        "eta": ak.unflatten((rng.normal(0, 1, total) * width).astype(np.float32), counts),
        "phi": ak.unflatten((rng.normal(0, 1, total) * width).astype(np.float32), counts),
    })
    data = {"is_signal": signal, "jet_id": np.arange(n, dtype=np.int32), "pf": particles}
    with uproot.recreate(path) as f:
        f.mktree("Jets", {k: (v.type if k == "pf" else v.dtype) for k, v in data.items()})
        half = n // 2  # two clusters, so that two threads share the work
        f["Jets"].extend({k: v[:half] for k, v in data.items()})
        f["Jets"].extend({k: v[half:] for k, v in data.items()})


class EdgeConvTagger(torch.nn.Module):
    """One EdgeConv block (ParticleNet): for each particle, its K nearest neighbours in (eta, phi),
    an MLP on (x_i, x_j - x_i), averaged over the neighbours; then a pooled classifier."""

    def __init__(self, k: int = K, c: int = 3, h: int = 32):
        super().__init__()
        self.k = k
        self.edge_mlp = torch.nn.Sequential(torch.nn.Linear(2 * c, h), torch.nn.ReLU(), torch.nn.Linear(h, h),
                                            torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 2))

    def forward(self, points, features):
        d = ((points.unsqueeze(2) - points.unsqueeze(1)) ** 2).sum(-1)        # [B, P, P]
        _, idx = torch.topk(-d, self.k + 1, dim=-1)                             # nearest first (itself)
        idx = idx[:, :, 1:]
        b, p, c = features.shape
        neighbours = torch.gather(features.unsqueeze(1).expand(b, p, p, c), 2,
                                  idx.unsqueeze(-1).expand(b, p, self.k, c))
        centre = features.unsqueeze(2).expand(b, p, self.k, c)
        edges = self.edge_mlp(torch.cat([centre, neighbours - centre], -1)).mean(2)
        return torch.softmax(self.head(edges.mean(1)), -1)


def padded(events: ak.Array, columns: list[str]) -> np.ndarray:
    return rdf.pad_jagged([events[c] for c in columns], P, sort_by=events["pf_pt"])


def main() -> int:
    make_jets("edgeconv_train.root", 3000, seed=1)
    make_jets("edgeconv_jets.root", 5000, seed=2)
    train = uproot.open("edgeconv_train.root:Jets").arrays()
    pts, feats = torch.from_numpy(padded(train, POINTS)), torch.from_numpy(padded(train, FEATURES))
    y = torch.from_numpy(train["is_signal"].to_numpy().astype(np.int64))
    torch.manual_seed(3)
    torch.set_num_threads(1)
    net = EdgeConvTagger()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(4):
        for i in range(0, len(y), 128):
            opt.zero_grad()
            prob = net(pts[i:i + 128], feats[i:i + 128])
            torch.nn.functional.nll_loss(torch.log(prob + 1e-7), y[i:i + 128]).backward()
            opt.step()
    net.eval()

    # One call: torch.onnx export (dynamo), symbolic batch, C++ generation and JIT.
    t0 = time.perf_counter()
    model = sofie_root.compile(net, example_inputs=(pts[:2], feats[:2]), input_names=["points", "features"],
                               output_names=["probs"])
    print(model)
    print(f"compiled from the nn.Module in {time.perf_counter() - t0:.1f} s")
    model.save("edgeconv.root", columns={"points": POINTS, "features": FEATURES}, overwrite=True)

    ROOT.EnableImplicitMT(2)
    df = ROOT.RDataFrame("Jets", "edgeconv_jets.root")
    df = rdf.define(df, "probs", "edgeconv.root", sort_by="pf_pt", pad=0.0)
    df = df.Define("p_signal", "probs[1]")
    h_sig = df.Filter("is_signal == 1").Histo1D(("sig", "EdgeConv tagger;P(signal);jets", 40, 0.0, 1.0), "p_signal")
    h_bkg = df.Filter("is_signal == 0").Histo1D(("bkg", "background", 40, 0.0, 1.0), "p_signal")
    t0 = time.perf_counter()
    out = df.AsNumpy(["p_signal", "jet_id"])
    print(f"RDataFrame: {len(out['jet_id'])} jets in {time.perf_counter() - t0:.2f} s on {df.GetNSlots()} slots")

    # PyTorch on the same padded particles (RDataFrame with threads reorders the entries).
    events = uproot.open("edgeconv_jets.root:Jets").arrays()
    with torch.no_grad():
        ref = net(torch.from_numpy(padded(events, POINTS)), torch.from_numpy(padded(events, FEATURES)))[:, 1]
    diff = float(np.max(np.abs(out["p_signal"] - ref.numpy()[out["jet_id"]])))
    print(f"max |RDataFrame - PyTorch| = {diff:.3g}")

    ROOT.gStyle.SetOptStat(0)
    c = ROOT.TCanvas("c", "", 700, 500)
    h_sig.SetLineColor(ROOT.kRed + 1)
    h_bkg.SetLineColor(ROOT.kBlue + 1)
    h_sig.SetMaximum(1.1 * max(h_sig.GetMaximum(), h_bkg.GetMaximum()))
    h_sig.Draw("hist")
    h_bkg.Draw("hist same")
    c.SaveAs("sofie_root020_edgeconv.png")
    print(f"mean P(signal): signal jets {h_sig.GetMean():.3f}, background jets {h_bkg.GetMean():.3f}")
    return 0 if diff < 1e-4 and h_sig.GetMean() > h_bkg.GetMean() + 0.1 else 1


if __name__ == "__main__":
    sys.exit(main())
