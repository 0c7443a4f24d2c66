## \file
## \ingroup tutorial_sofie_root
## \notebook -nodraw
## A jet tagger on particle lists (RVec branches) inside an RDataFrame event loop.
##
## Toy jets are written with uproot (no download): per jet a variable number of particles with
## pt, eta, phi and charge (jagged branches, read by RDataFrame as RVec columns) and the jet's
## pt and mass. A small DeepSets-style PyTorch network takes the 16 highest-pt particles
## ([N, 16, 4], zero-padded) and the jet variables ([N, 2]); it is trained on arrays padded by
## sofie_root.rdf.pad_jagged, compiled, and stored in a .root file together with the names of the
## columns it was trained on. `sofie_root.rdf.define` then needs only the ordering key: it pads
## or truncates each event's lists to 16 particles, ordered by pt, in C++, one Session per slot.
## The columnar result (uproot + awkward + sofie_root.rdf.evaluate) is the same.
## The tagger output is drawn to `sofie_root011_tagger.png`.
##
## \macro_output
## \author sofie_root developers

from __future__ import annotations

import logging
import sys

import awkward as ak
import numpy as np
import ROOT
import sofie_root.rdf
import torch
import uproot

import sofie_root

P = 16
PARTICLES = ["pf_pt", "pf_eta", "pf_phi", "pf_charge"]
JET = ["jet_pt", "jet_mass"]


def make_jets(path: str, n: int, seed: int) -> None:
    """Signal jets: few hard, collimated particles; background: more, softer, wider ones."""
    rng = np.random.default_rng(seed)
    signal = rng.integers(0, 2, n).astype(np.int32)
    counts = np.where(signal == 1, rng.poisson(8, n), rng.poisson(14, n)) + 1
    total = int(counts.sum())
    sig_p = np.repeat(signal, counts) == 1
    pt = np.where(sig_p, rng.exponential(12.0, total), rng.exponential(5.0, total)).astype(np.float32)
    width = np.where(sig_p, 0.08, 0.25)
    particles = ak.zip({
        "pt": ak.unflatten(pt, counts),
        "eta": ak.unflatten((rng.normal(0, 1, total) * width).astype(np.float32), counts),
        "phi": ak.unflatten((rng.normal(0, 1, total) * width).astype(np.float32), counts),
        "charge": ak.unflatten(rng.integers(-1, 2, total).astype(np.int32), counts),
    })
    jet_pt = ak.to_numpy(ak.sum(particles.pt, axis=1)).astype(np.float32)
    jet_mass = (jet_pt * np.where(signal == 1, 0.15, 0.08) * rng.uniform(0.7, 1.3, n)).astype(np.float32)
    data = {"is_signal": signal, "jet_pt": jet_pt, "jet_mass": jet_mass, "pf": particles}
    with uproot.recreate(path) as f:
        f.mktree("Jets", {k: (v.type if k == "pf" else v.dtype) for k, v in data.items()})
        half = n // 2  # two clusters, so that two threads share the work
        f["Jets"].extend({k: v[:half] for k, v in data.items()})
        f["Jets"].extend({k: v[half:] for k, v in data.items()})


class DeepSets(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.phi = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU())
        self.rho = torch.nn.Sequential(torch.nn.Linear(32 + 2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))

    def forward(self, particles, jet):
        pooled = self.phi(particles).sum(dim=1)
        return torch.softmax(self.rho(torch.cat([pooled, jet / 100.0], dim=1)), dim=1)


def train(events: ak.Array) -> torch.nn.Module:
    x = torch.from_numpy(sofie_root.rdf.pad_jagged([events[c] for c in PARTICLES], P, sort_by=events["pf_pt"]))
    j = torch.from_numpy(np.stack([events[c].to_numpy() for c in JET], axis=1))
    y = torch.from_numpy(events["is_signal"].to_numpy().astype(np.int64))
    torch.manual_seed(3)
    torch.set_num_threads(1)
    net = DeepSets()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(8):
        for i in range(0, len(x), 128):
            opt.zero_grad()
            p = net(x[i:i + 128], j[i:i + 128])
            torch.nn.functional.nll_loss(torch.log(p + 1e-7), y[i:i + 128]).backward()
            opt.step()
    return net.eval()


def main() -> int:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    make_jets("jets_train.root", 4000, seed=1)
    make_jets("jets.root", 20000, seed=2)
    train_events = uproot.open("jets_train.root:Jets").arrays()
    net = train(train_events)
    torch.onnx.export(net, (torch.zeros(2, P, 4), torch.zeros(2, 2)), "tagger.onnx", dynamo=True, verbose=False,
                      input_names=["particles", "jet"], output_names=["probs"],
                      dynamic_shapes=({0: torch.export.Dim("N")}, {0: torch.export.Dim("N")}))
    model = sofie_root.compile("tagger.onnx")
    model.save("tagger.root", columns={"particles": PARTICLES, "jet": JET}, overwrite=True)
    print(model)

    ROOT.EnableImplicitMT(2)
    df = ROOT.RDataFrame("Jets", "jets.root")
    print("particle columns:", {c: str(df.GetColumnType(c)) for c in PARTICLES})
    # The column names come from tagger.root; pf_charge is an RVec<int>, converted to float in C++.
    df = sofie_root.rdf.define(df, "probs", "tagger.root", sort_by="pf_pt", pad=0.0)
    df = df.Define("p_signal", "probs[1]")
    h_sig = df.Filter("is_signal == 1").Histo1D(("sig", "jet tagger;P(signal);jets", 40, 0.0, 1.0), "p_signal")
    h_bkg = df.Filter("is_signal == 0").Histo1D(("bkg", "background", 40, 0.0, 1.0), "p_signal")
    rdf_out = df.AsNumpy(["p_signal", "jet_pt", "jet_mass"])

    # Columnar: the same events through uproot + awkward, padded by the numpy twin of the C++ code.
    events = uproot.open("jets.root:Jets").arrays()
    columnar = sofie_root.rdf.evaluate(model, events, inputs={"particles": PARTICLES, "jet": JET},
                                       sort_by="pf_pt", outputs="probs")[:, 1]
    # MT changes the order of the entries: match events by their (jet_pt, jet_mass)
    o_rdf = np.lexsort((rdf_out["jet_mass"], rdf_out["jet_pt"]))
    o_col = np.lexsort((events["jet_mass"].to_numpy(), events["jet_pt"].to_numpy()))
    diff = float(np.max(np.abs(rdf_out["p_signal"][o_rdf] - columnar[o_col])))
    print(f"{len(columnar)} jets; max |RDataFrame - columnar| = {diff:.3g}")

    ROOT.gStyle.SetOptStat(0)
    c = ROOT.TCanvas("c", "", 700, 500)
    h_sig.SetLineColor(ROOT.kRed + 1)
    h_bkg.SetLineColor(ROOT.kBlue + 1)
    h_sig.SetMaximum(1.1 * max(h_sig.GetMaximum(), h_bkg.GetMaximum()))
    h_sig.Draw("hist")
    h_bkg.Draw("hist same")
    legend = ROOT.TLegend(0.4, 0.75, 0.6, 0.88)
    legend.AddEntry(h_sig.GetPtr(), "signal jets", "l")
    legend.AddEntry(h_bkg.GetPtr(), "background jets", "l")
    legend.Draw()
    c.SaveAs("sofie_root011_tagger.png")
    print(f"mean P(signal): signal jets {h_sig.GetMean():.3f}, background jets {h_bkg.GetMean():.3f}")
    return 0 if diff < 1e-5 and h_sig.GetMean() > h_bkg.GetMean() + 0.2 else 1


if __name__ == "__main__":
    sys.exit(main())
