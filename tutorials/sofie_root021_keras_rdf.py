## \file
## \ingroup tutorial_sofie_root
## \notebook -nodraw
## A Keras 3 model (Conv1D + BatchNormalization + LSTM over the particles of a jet, plus dense
## layers on jet variables) compiled from its .keras file and run in an RDataFrame event loop.
##
## Keras runs here on its PyTorch backend (no TensorFlow). sofie_root maps the Keras layers
## directly to its own operators (no tf2onnx): the channels-last convolutions run channels-first
## with one transpose before the first one and one before the LSTM (not one per layer), and the
## recurrent layer becomes a fused LSTM kernel.
## The model is trained briefly, saved as `tagger.keras`, compiled from that file, and scores
## every jet in C++ on two threads; the scores are compared with Keras' own predictions.
##
## \macro_output
## \author sofie_root developers

from __future__ import annotations

import os
import sys
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")

import awkward as ak
import keras
import numpy as np
import ROOT
import uproot

import sofie_root
from sofie_root import rdf

P = 12
PARTICLES = ["pf_pt", "pf_eta", "pf_phi"]
JET = ["jet_pt", "jet_mass"]


def make_jets(path: str, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    signal = rng.integers(0, 2, n).astype(np.int32)
    counts = np.where(signal == 1, rng.poisson(6, n), rng.poisson(11, n)) + 1
    total = int(counts.sum())
    sig_p = np.repeat(signal, counts) == 1
    width = np.where(sig_p, 0.08, 0.25)
    particles = ak.zip({
        "pt": ak.unflatten(np.where(sig_p, rng.exponential(1.2, total), rng.exponential(0.5, total))
                           .astype(np.float32), counts),
        "eta": ak.unflatten((rng.normal(0, 1, total) * width).astype(np.float32), counts),
        "phi": ak.unflatten((rng.normal(0, 1, total) * width).astype(np.float32), counts),
    })
    jet_pt = ak.to_numpy(ak.sum(particles.pt, axis=1)).astype(np.float32)
    jet_mass = (jet_pt * np.where(signal == 1, 0.15, 0.08) * rng.uniform(0.7, 1.3, n)).astype(np.float32)
    data = {"is_signal": signal, "jet_id": np.arange(n, dtype=np.int32), "jet_pt": jet_pt, "jet_mass": jet_mass,
            "pf": particles}
    with uproot.recreate(path) as f:
        f.mktree("Jets", {k: (v.type if k == "pf" else v.dtype) for k, v in data.items()})
        half = n // 2
        f["Jets"].extend({k: v[:half] for k, v in data.items()})
        f["Jets"].extend({k: v[half:] for k, v in data.items()})


def arrays(events: ak.Array) -> tuple[np.ndarray, np.ndarray]:
    particles = rdf.pad_jagged([events[c] for c in PARTICLES], P, sort_by=events["pf_pt"])
    jet = np.stack([events[c].to_numpy() for c in JET], axis=1)
    return particles, jet


def build() -> keras.Model:
    L = keras.layers
    particles = keras.Input((P, len(PARTICLES)), name="particles")
    jet = keras.Input((len(JET),), name="jet")
    h = L.Conv1D(16, 3, padding="same", activation="relu")(particles)
    h = L.BatchNormalization()(h)
    h = L.Conv1D(16, 1, activation="swish")(h)
    h = L.LSTM(16)(h)
    j = L.Dense(8, activation="elu")(jet)
    h = L.Concatenate()([h, j])
    h = L.Dropout(0.1)(L.Dense(16, activation="relu")(h))
    return keras.Model([particles, jet], L.Dense(2, activation="softmax", name="probs")(h))


def main() -> int:
    make_jets("keras_train.root", 3000, seed=1)
    make_jets("keras_jets.root", 5000, seed=2)
    train = uproot.open("keras_train.root:Jets").arrays()
    x, j = arrays(train)
    y = train["is_signal"].to_numpy()
    keras.utils.set_random_seed(4)
    net = build()
    net.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net.fit([x, j / 10.0], y, epochs=4, batch_size=128, verbose=0)
        net.save("tagger.keras")

    t0 = time.perf_counter()
    model = sofie_root.compile("tagger.keras")          # Keras layers -> sofie_root IR -> C++
    print(model)
    print(f"compiled tagger.keras in {time.perf_counter() - t0:.1f} s; "
          f"{sum(n.op_type == 'Transpose' for n in model.graph.nodes)} transpose(s) in the graph")
    model.save("keras_tagger.root", columns={"particles": PARTICLES, "jet": JET}, overwrite=True)

    ROOT.EnableImplicitMT(2)
    df = ROOT.RDataFrame("Jets", "keras_jets.root")
    # the jet variables are scaled as in training, in C++, before they reach the model
    df = df.Redefine("jet_pt", "jet_pt / 10.f").Redefine("jet_mass", "jet_mass / 10.f")
    df = rdf.define(df, "probs", "keras_tagger.root", sort_by="pf_pt", pad=0.0)
    df = df.Define("p_signal", "probs[1]")
    h_sig = df.Filter("is_signal == 1").Histo1D(("sig", "Keras tagger;P(signal);jets", 40, 0.0, 1.0), "p_signal")
    h_bkg = df.Filter("is_signal == 0").Histo1D(("bkg", "background", 40, 0.0, 1.0), "p_signal")
    out = df.AsNumpy(["p_signal", "jet_id"])

    events = uproot.open("keras_jets.root:Jets").arrays()
    xe, je = arrays(events)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.asarray(net.predict([xe, je / 10.0], verbose=0, batch_size=1024))[:, 1]
    diff = float(np.max(np.abs(out["p_signal"] - ref[out["jet_id"]])))
    print(f"{len(ref)} jets; max |RDataFrame - Keras| = {diff:.3g}")
    print(f"mean P(signal): signal jets {h_sig.GetMean():.3f}, background jets {h_bkg.GetMean():.3f}")
    return 0 if diff < 1e-4 and h_sig.GetMean() > h_bkg.GetMean() + 0.1 else 1


if __name__ == "__main__":
    sys.exit(main())
