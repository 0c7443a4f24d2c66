## \file
## \ingroup tutorial_sofie_root
## \notebook -nodraw
## A compiled jet tagger inside a coffea processor: NanoEvents in, a per-jet score out, a
## `hist` histogram filled and drawn with mplhep.
##
## The tutorial writes its own NanoAOD-style file with uproot (no download): per event a
## variable number of jets (`nJet`, `Jet_pt`, `Jet_eta`, `Jet_btagDeepFlavB`), "b-like" jets
## and light jets drawn from different distributions. A small PyTorch network is trained to tell
## them apart from the three jet variables and compiled with sofie_root. The processor calls
## `sofie_root.awkward.apply(model, events, ["Jet.pt", "Jet.eta", "Jet.btagDeepFlavB"])`: the
## model takes one row per jet, so the result keeps the events' structure (a score per jet,
## `N * var * float32`). coffea's Runner runs the processor over two chunks of the file in two
## worker processes: the processor, and the compiled model in it, are pickled to them (the
## model travels as its IR and weights and each process compiles it once).
## The score histogram is drawn to `sofie_root030_coffea_scores.png`.
##
## \macro_output
## \author sofie_root developers

from __future__ import annotations

import sys

import awkward as ak
import hist
import matplotlib
import numpy as np
import torch
import uproot
from coffea import processor
from coffea.nanoevents import NanoAODSchema

import sofie_root
import sofie_root.awkward

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mplhep

FEATURES = ["Jet.pt", "Jet.eta", "Jet.btagDeepFlavB"]


def jets(rng, n: int, b_like: bool) -> dict[str, np.ndarray]:
    pt = rng.exponential(60 if b_like else 40, n) + 20
    eta = rng.normal(0, 1.2 if b_like else 1.8, n)
    btag = rng.beta(5, 2, n) if b_like else rng.beta(1.2, 6, n)
    return {"pt": pt.astype(np.float32), "eta": eta.astype(np.float32), "btagDeepFlavB": btag.astype(np.float32)}


def write_nanoaod(path: str, n_events: int, seed: int) -> None:
    """Events with 0-6 jets each, a third of them b-like, in NanoAOD's branch layout."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 7, n_events)
    total = int(counts.sum())
    is_b = rng.random(total) < 1 / 3
    b, light = jets(rng, total, True), jets(rng, total, False)
    jet = {k: np.where(is_b, b[k], light[k]) for k in b}
    jet["phi"] = rng.uniform(-np.pi, np.pi, total).astype(np.float32)  # NanoAOD jets are 4-vectors
    jet["mass"] = (jet["pt"] * rng.uniform(0.05, 0.2, total)).astype(np.float32)
    jet["hadronFlavour"] = np.where(is_b, 5, 0).astype(np.int32)
    branches = {"run": np.ones(n_events, np.uint32), "luminosityBlock": np.ones(n_events, np.uint32),
                "event": np.arange(n_events, dtype=np.uint64),
                "Jet": ak.zip({k: ak.unflatten(v, counts) for k, v in jet.items()})}
    with uproot.recreate(path) as f:  # mktree names the jagged record's branches nJet, Jet_pt, ...
        f.mktree("Events", {k: v.type if k == "Jet" else v.dtype for k, v in branches.items()})
        f["Events"].extend(branches)


def train(seed: int = 1) -> torch.nn.Module:
    """A 3-16-1 network separating b-like from light jets (standardised inputs inside it)."""
    rng = np.random.default_rng(seed)
    b, light = jets(rng, 4000, True), jets(rng, 4000, False)
    x = np.concatenate([np.stack([d[k] for k in ("pt", "eta", "btagDeepFlavB")], 1) for d in (b, light)])
    y = np.concatenate([np.ones(4000), np.zeros(4000)]).astype(np.float32)[:, None]
    mean, std = x.mean(0), x.std(0)
    torch.manual_seed(seed)

    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean))
            self.register_buffer("std", torch.tensor(std))
            self.net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1),
                                           torch.nn.Sigmoid())

        def forward(self, x):
            return self.net((x - self.mean) / self.std)

    model = Tagger()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
    return model.eval()


class JetTagger(processor.ProcessorABC):
    """Scores every jet with the compiled model and histograms the scores by true flavour."""

    def __init__(self, model):
        self.model = model  # a sofie_root.Model: pickled to the worker processes with the processor

    def process(self, events):
        scores = sofie_root.awkward.apply(self.model, events, FEATURES)  # N * var * float32
        h = (hist.Hist.new.StrCat(["b", "light"], name="flavour").Reg(25, 0, 1, name="score", label="tagger score")
             .Double())
        flavour = ak.flatten(events.Jet.hadronFlavour)
        flat = ak.flatten(scores)
        h.fill(flavour="b", score=flat[flavour == 5])
        h.fill(flavour="light", score=flat[flavour != 5])
        return {"scores": h, "jets": int(ak.sum(ak.num(scores))), "events": len(events)}

    def postprocess(self, accumulator):
        return accumulator


def main() -> None:
    path = "sofie_root030_nanoaod.root"
    write_nanoaod(path, 6000, seed=0)
    module = train()
    model = sofie_root.compile(module, example_inputs=(torch.zeros(1, 3),))
    print(model)

    runner = processor.Runner(executor=processor.FuturesExecutor(workers=2), schema=NanoAODSchema, chunksize=3000)
    out = runner({"toy": {"files": {path: "Events"}}}, processor_instance=JetTagger(model), treename="Events")
    h = out["scores"]
    print(f"{out['events']} events, {out['jets']} jets scored")

    # the same scores without coffea: the model on the jets of the file, as a numpy array
    events = uproot.open(path)["Events"].arrays(["Jet_pt", "Jet_eta", "Jet_btagDeepFlavB", "Jet_hadronFlavour"])
    x = np.stack([ak.to_numpy(ak.flatten(events[f"Jet_{k}"])) for k in ("pt", "eta", "btagDeepFlavB")], 1)
    with torch.no_grad():
        direct = module(torch.tensor(x)).numpy()[:, 0]
    is_b = ak.to_numpy(ak.flatten(events.Jet_hadronFlavour)) == 5
    expected = np.histogram(direct[is_b], bins=25, range=(0, 1))[0]
    moved = int(np.abs(h["b", :].values() - expected).sum())  # a score on a bin edge may land either side
    print(f"b jets in other bins than PyTorch's scores put them: {moved} of {int(expected.sum())}")
    if moved > 2 or out["jets"] != len(direct):
        sys.exit("the processor's histogram disagrees with PyTorch")
    eff = h["b", :].values()[15:].sum() / h["b", :].values().sum()
    mistag = h["light", :].values()[15:].sum() / h["light", :].values().sum()
    print(f"score > 0.6: b efficiency {eff:.2f}, light mistag rate {mistag:.3f}")

    plt.style.use(mplhep.style.CMS)
    fig, ax = plt.subplots()
    mplhep.histplot([h["b", :], h["light", :]], label=["b jets", "light jets"], ax=ax, density=True)
    ax.set_yscale("log")
    ax.set_ylabel("jets (normalised)")
    ax.legend()
    fig.savefig("sofie_root030_coffea_scores.png")
    print("wrote sofie_root030_coffea_scores.png")


if __name__ == "__main__":
    main()
