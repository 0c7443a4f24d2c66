## \file
## \ingroup tutorial_sofie_root
## \notebook -nodraw
## The same model in distributed RDataFrame, on a Dask cluster.
##
## A local Dask cluster of two worker processes stands in for a real one (swap in your
## scheduler's address). The events are written with uproot in two clusters (no download), so
## the dataset splits into two partitions. `sofie_root.rdf.define` on the distributed dataframe
## ships the model file to the workers (ROOT.RDF.Distributed.DistributeFiles), compiles it and
## declares the functor there before the tasks run (ROOT.RDF.Distributed.initialize), and
## defines the column with a string expression; no C++ object is pickled. The result equals the
## local run; the score distribution is drawn to `sofie_root012_distributed.png`.
##
## \macro_output
## \author sofie_root developers

from __future__ import annotations

import contextlib
import io
import logging
import sys

import numpy as np
import ROOT
import sofie_root.rdf
import torch
import uproot

import sofie_root

COLUMNS = ["lep_pt", "lep_eta", "met", "n_jets", "ht"]


def make_events(path: str, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    signal = rng.integers(0, 2, n).astype(np.int32)
    data = {
        "is_signal": signal,
        "lep_pt": (rng.exponential(30, n) + 20 + 20 * signal).astype(np.float32),
        "lep_eta": rng.normal(0, 1.2 - 0.4 * signal, n).astype(np.float32),
        "met": rng.exponential(40 + 30 * signal, n),  # double
        "n_jets": rng.poisson(3 + 2 * signal, n).astype(np.int32),
        "ht": (rng.exponential(150, n) + 100 + 150 * signal).astype(np.float32),
    }
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: v.dtype for k, v in data.items()})
        half = n // 2
        f["Events"].extend({k: v[:half] for k, v in data.items()})
        f["Events"].extend({k: v[half:] for k, v in data.items()})


def train(path: str) -> torch.nn.Module:
    arrays = uproot.open(f"{path}:Events").arrays(library="np")
    x = torch.from_numpy(np.stack([arrays[c].astype(np.float32) for c in COLUMNS], axis=1))
    x = x / torch.tensor([100.0, 1.0, 100.0, 5.0, 500.0])
    y = torch.from_numpy(arrays["is_signal"].astype(np.float32))[:, None]
    torch.manual_seed(2)
    torch.set_num_threads(1)
    scale = torch.nn.Linear(5, 5)
    with torch.no_grad():  # the input scaling is part of the model, so it runs in C++ too
        scale.weight.copy_(torch.diag(torch.tensor([0.01, 1.0, 0.01, 0.2, 0.002])))
        scale.bias.zero_()
    scale.requires_grad_(False)
    head = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1), torch.nn.Sigmoid())
    opt = torch.optim.Adam(head.parameters(), lr=5e-3)
    for _ in range(8):
        for i in range(0, len(x), 128):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy(head(x[i:i + 128]), y[i:i + 128]).backward()
            opt.step()
    return torch.nn.Sequential(scale, head).eval()


def book(df):
    df = sofie_root.rdf.define(df, "score", "classifier.onnx", COLUMNS)
    h_sig = df.Filter("is_signal == 1").Histo1D(("sig", "distributed scoring;score;events", 40, 0.0, 1.0), "score")
    h_bkg = df.Filter("is_signal == 0").Histo1D(("bkg", "background", 40, 0.0, 1.0), "score")
    return df.Sum("score"), h_sig, h_bkg


def main() -> int:
    from dask.distributed import Client, LocalCluster

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    make_events("train.root", 4000, seed=1)
    make_events("events.root", 20000, seed=2)
    net = train("train.root")
    torch.onnx.export(net, (torch.zeros(2, 5),), "classifier.onnx", dynamo=True, verbose=False,
                      dynamic_shapes=({0: torch.export.Dim("N")},))

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    try:
        ddf = ROOT.RDataFrame("Events", "events.root", executor=client, npartitions=2)
        total, h_sig, h_bkg = book(ddf)
        with contextlib.redirect_stdout(io.StringIO()):  # Dask's progress bar
            dist_total = total.GetValue()  # runs the graph on the workers
        h_sig, h_bkg = h_sig.GetValue(), h_bkg.GetValue()  # the merged histograms
        pids = client.run(lambda: __import__("os").getpid())
    finally:
        client.close()
        cluster.close()

    local_total, l_sig, l_bkg = book(ROOT.RDataFrame("Events", "events.root"))
    same = all(h.GetBinContent(i) == lh.GetBinContent(i) for h, lh in ((h_sig, l_sig), (h_bkg, l_bkg))
               for i in range(42))
    print(f"workers: {len(pids)} processes; sum of scores: distributed {dist_total:.6f}, "
          f"local {local_total.GetValue():.6f}; histograms identical: {same}")

    ROOT.gStyle.SetOptStat(0)
    c = ROOT.TCanvas("c", "", 700, 500)
    h_sig.SetLineColor(ROOT.kRed + 1)
    h_bkg.SetLineColor(ROOT.kBlue + 1)
    h_sig.SetMaximum(1.1 * max(h_sig.GetMaximum(), h_bkg.GetMaximum()))
    h_sig.Draw("hist")
    h_bkg.Draw("hist same")
    legend = ROOT.TLegend(0.4, 0.75, 0.6, 0.88)
    legend.AddEntry(h_sig, "signal", "l")
    legend.AddEntry(h_bkg, "background", "l")
    legend.Draw()
    c.SaveAs("sofie_root012_distributed.png")
    ok = same and abs(dist_total - local_total.GetValue()) <= 1e-9 * max(1.0, abs(dist_total))
    print(f"mean score: signal {h_sig.GetMean():.3f}, background {h_bkg.GetMean():.3f}")
    if not ok:
        print("FAILED: the distributed result differs from the local one")
    return 0 if ok and h_sig.GetMean() > h_bkg.GetMean() else 1


if __name__ == "__main__":
    sys.exit(main())
