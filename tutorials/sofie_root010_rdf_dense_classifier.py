## \file
## \ingroup tutorial_sofie_root
## \notebook -nodraw
## A dense classifier inside an RDataFrame event loop, on scalar branches.
##
## The events are made here with RDataFrame and written with Snapshot (no download): seven
## kinematic variables of mixed types (float, double, int), signal and background. A small
## PyTorch network is trained on them, exported to ONNX and compiled with sofie_root; then
## `df.Define("score", sofie_root.functor(...), columns)` scores every event in C++, one Session
## per slot, on two threads. The score distribution is drawn to `sofie_root010_score.png`.
##
## \macro_output
## \author sofie_root developers

from __future__ import annotations

import logging
import sys
import time

import numpy as np
import ROOT
import torch

import sofie_root

COLUMNS = ["m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "n_jets"]


def make_events(path: str, n: int) -> None:
    """Toy events: signal has resonances in m_bb and m_wbb and more jets; background is falling."""
    ROOT.gInterpreter.Declare("#include <TRandom3.h>")
    df = (ROOT.RDataFrame(n)
          .Define("is_signal", "int(rdfentry_ % 2)")
          .Define("m_jj", "float(gRandom->Exp(0.6) + 0.2)")
          .Define("m_jjj", "double(gRandom->Exp(0.7) + 0.3)")
          .Define("m_lv", "float(gRandom->Exp(0.5) + 0.2)")
          .Define("m_jlv", "float(gRandom->Exp(0.6) + 0.3)")
          .Define("m_bb", "float(is_signal ? gRandom->Gaus(1.0, 0.08) : gRandom->Exp(0.6) + 0.2)")
          .Define("m_wbb", "double(is_signal ? gRandom->Gaus(1.2, 0.15) : gRandom->Exp(0.7) + 0.3)")
          .Define("n_jets", "int(gRandom->Poisson(is_signal ? 5.0 : 3.5))"))
    ROOT.gRandom.SetSeed(42)
    opts = ROOT.RDF.RSnapshotOptions()
    opts.fAutoFlush = 2500  # several clusters, so that both threads get work
    df.Snapshot("Events", path, ["is_signal", *COLUMNS], opts)


def train(path: str) -> torch.nn.Module:
    arrays = ROOT.RDataFrame("Events", path).AsNumpy(["is_signal", *COLUMNS])
    x = torch.from_numpy(np.stack([arrays[c].astype(np.float32) for c in COLUMNS], axis=1))
    y = torch.from_numpy(arrays["is_signal"].astype(np.float32))[:, None]
    torch.manual_seed(1)
    torch.set_num_threads(1)
    net = torch.nn.Sequential(torch.nn.Linear(7, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 1), torch.nn.Sigmoid())
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    for _ in range(10):
        for i in range(0, len(x), 256):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy(net(x[i:i + 256]), y[i:i + 256]).backward()
            opt.step()
    return net.eval()


def main() -> int:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    make_events("dense_train.root", 4000)
    make_events("dense_events.root", 20000)
    net = train("dense_train.root")
    torch.onnx.export(net, (torch.zeros(4, 7),), "dense_classifier.onnx", dynamo=True, verbose=False,
                      input_names=["features"], output_names=["score"],
                      dynamic_shapes=({0: torch.export.Dim("N")},))
    model = sofie_root.compile("dense_classifier.onnx")
    print(model)

    ROOT.EnableImplicitMT(2)
    df = ROOT.RDataFrame("Events", "dense_events.root")
    # Column types are read from df (float, double and int here) and checked now, before the loop.
    score = sofie_root.functor(model, COLUMNS, df=df)
    df = df.Define("score", score, score.columns)
    h_sig = df.Filter("is_signal == 1").Histo1D(("sig", "dense classifier;score;events", 40, 0.0, 1.0), "score")
    h_bkg = df.Filter("is_signal == 0").Histo1D(("bkg", "background", 40, 0.0, 1.0), "score")
    t0 = time.perf_counter()
    out = df.AsNumpy(["score", *COLUMNS])  # runs the event loop once, for all booked results
    n = h_sig.GetEntries() + h_bkg.GetEntries()
    print(f"scored {int(n)} events in {time.perf_counter() - t0:.2f} s on {df.GetNSlots()} slots "
          f"with {score.sessions()} Sessions (one per thread that ran)")

    # The same events through model.infer in one batch give the same scores.
    x = np.stack([out[c].astype(np.float32) for c in COLUMNS], axis=1)
    diff = float(np.max(np.abs(model(x)[:, 0] - out["score"])))
    print(f"max |functor - model.infer| = {diff:.3g}")

    ROOT.gStyle.SetOptStat(0)
    c = ROOT.TCanvas("c", "", 700, 500)
    h_sig.SetLineColor(ROOT.kRed + 1)
    h_bkg.SetLineColor(ROOT.kBlue + 1)
    h_sig.SetMaximum(1.1 * max(h_sig.GetMaximum(), h_bkg.GetMaximum()))
    h_sig.Draw("hist")
    h_bkg.Draw("hist same")
    legend = ROOT.TLegend(0.4, 0.75, 0.6, 0.88)
    legend.AddEntry(h_sig.GetPtr(), "signal", "l")
    legend.AddEntry(h_bkg.GetPtr(), "background", "l")
    legend.Draw()
    c.SaveAs("sofie_root010_score.png")
    separated = h_sig.GetMean() > h_bkg.GetMean() + 0.2
    print(f"mean score: signal {h_sig.GetMean():.3f}, background {h_bkg.GetMean():.3f}")
    return 0 if diff < 1e-5 and separated else 1


if __name__ == "__main__":
    sys.exit(main())
