"""Fixtures for the RDataFrame tests: small ONNX models and a ROOT file written with uproot."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from . import models

N_EVENTS = 3000


def make_events(n: int, seed: int = 0) -> ak.Array:
    """Toy events: scalar branches of several arithmetic types and particle lists with ties in pt,
    empty events, and events longer than the models' P."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 8, n)
    counts[:3] = [0, 4, 7]
    total = int(counts.sum())
    pt = (np.round(rng.exponential(5.0, total) * 2) / 2).astype(np.float32)  # steps of 0.5: ties
    pf = ak.zip({"pt": ak.unflatten(pt, counts),
                 "eta": ak.unflatten(rng.normal(0, 1.5, total).astype(np.float32), counts),
                 "phi": ak.unflatten(rng.uniform(-3, 3, total).astype(np.float64), counts),
                 "q": ak.unflatten(rng.integers(-1, 2, total).astype(np.int32), counts)})
    return ak.Array({
        "a": rng.standard_normal(n).astype(np.float32),
        "b": rng.standard_normal(n),
        "c": rng.integers(-5, 5, n).astype(np.int32),
        "d": rng.integers(0, 100, n).astype(np.int64),
        "e": rng.integers(0, 255, n).astype(np.uint8),
        "flag": rng.integers(0, 2, n).astype(bool),
        "jet_pt": rng.exponential(50, n).astype(np.float32),
        "jet_eta": rng.normal(0, 2, n).astype(np.float32),
        "pf": pf,
    })


def write_events(path, events: ak.Array, parts: int = 2) -> None:
    """A TTree with ``parts`` clusters (one per extend), so distributed RDataFrame can split it."""
    fields = {k: events[k] for k in ak.fields(events)}
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: (v.type if k == "pf" else v.to_numpy().dtype) for k, v in fields.items()})
        step = -(-len(events) // parts)
        for s in range(0, len(events), step):
            f["Events"].extend({k: v[s:s + step] for k, v in fields.items()})


def flat_events(events: ak.Array) -> ak.Array:
    """The events with the branch names RDataFrame sees (pf_pt, pf_eta, ...)."""
    out = {k: events[k] for k in ak.fields(events) if k != "pf"}
    out.update({f"pf_{k}": events.pf[k] for k in ak.fields(events.pf)})
    return ak.Array(out)


@pytest.fixture(scope="session")
def rdf_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rdf")


@pytest.fixture(scope="session")
def events():
    return make_events(N_EVENTS)


@pytest.fixture(scope="session")
def data_file(rdf_dir, events):
    path = rdf_dir / "events.root"
    write_events(path, events)
    return str(path)


@pytest.fixture(scope="session")
def dense_path(rdf_dir):
    return models.dense(rdf_dir / "dense.onnx")


@pytest.fixture(scope="session")
def tagger_path(rdf_dir):
    return models.tagger(rdf_dir / "tagger.onnx")
