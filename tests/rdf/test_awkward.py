"""sofie_root.awkward.apply: awkward events eagerly, dask-awkward collections lazily, TTree and
RNTuple files; results per event equal to the RDataFrame functor's and onnxruntime's."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import ROOT
import sofie_root.rdf as srdf
import uproot

import sofie_root
import sofie_root.awkward as sak
from sofie_root import InputError, SofieError

from . import models
from .conftest import flat_events

INPUTS = {"particles": srdf.Columns(["pf_pt", "pf_eta", "pf_phi"], sort_by="pf_pt", pad=-1.0),
          "jet": ["jet_pt", "jet_eta"]}


def _ort(path, **feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _jets(n: int, seed: int = 3) -> ak.Array:
    """Events with a jagged list of jets, each with its own jagged list of particles."""
    rng = np.random.default_rng(seed)
    njet = rng.integers(0, 4, n)
    npf = rng.integers(0, 7, int(njet.sum()))
    total = int(npf.sum())

    def per_particle(x):
        return ak.unflatten(ak.unflatten(x, npf), njet)

    pf = ak.zip({"pt": per_particle(np.round(rng.exponential(4, total) * 2).astype(np.float32) / 2),
                 "eta": per_particle(rng.normal(0, 1.5, total).astype(np.float32)),
                 "phi": per_particle(rng.uniform(-3, 3, total))})
    jet = ak.zip({"pt": ak.unflatten(rng.exponential(40, int(njet.sum())).astype(np.float32), njet),
                  "eta": ak.unflatten(rng.normal(0, 2, int(njet.sum())).astype(np.float32), njet),
                  "m": ak.unflatten(rng.exponential(10, int(njet.sum())).astype(np.float32), njet),
                  "pf": pf}, depth_limit=2)
    return ak.zip({"Jet": jet, "run": np.arange(n)}, depth_limit=1)


def test_event_level_equals_evaluate_and_onnxruntime(events, tagger_path) -> None:
    flat = flat_events(events)[:500]
    tagger = sofie_root.compile(tagger_path)
    out = sak.apply(tagger, flat, inputs=INPUTS, outputs="probs")
    assert str(out.type) == "500 * 3 * float32"
    np.testing.assert_array_equal(ak.to_numpy(out), srdf.evaluate(tagger, flat, inputs=INPUTS, outputs="probs"))
    parts = srdf.pad_jagged([flat.pf_pt, flat.pf_eta, flat.pf_phi], 4, pad=-1.0, sort_by=flat.pf_pt)
    jet = np.stack([ak.to_numpy(flat.jet_pt), ak.to_numpy(flat.jet_eta)], axis=1)
    np.testing.assert_allclose(ak.to_numpy(out), _ort(tagger_path, particles=parts, jet=jet)[0], rtol=1e-5, atol=1e-6)
    total = sak.apply(tagger, flat, inputs=INPUTS, outputs="total")  # a single value: one number per event
    assert str(total.type) == "500 * float32"


def test_score_per_jet_keeps_the_event_structure(dense_path) -> None:
    events = _jets(300)
    dense = sofie_root.compile(dense_path)
    scores = sak.apply(dense, events, ["Jet.pt", "Jet.eta", "Jet.m"])  # [N, 3] model, var * float columns
    assert str(scores.type) == "300 * var * float32"
    assert ak.all(ak.num(scores, axis=1) == ak.num(events.Jet, axis=1))
    x = np.stack([ak.to_numpy(ak.flatten(events.Jet[k])) for k in ("pt", "eta", "m")], axis=1)
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(scores)), _ort(dense_path, x=x)[0][:, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(SofieError):
        sak.apply(dense, events, ["Jet.pt", "Jet.eta", "Jet.m"], depth=0)  # lists where numbers are expected


def test_particles_per_jet(tagger_path) -> None:
    events = _jets(200)
    tagger = sofie_root.compile(tagger_path)
    inputs = {"particles": srdf.Columns(["Jet.pf.pt", "Jet.pf.eta", "Jet.pf.phi"], sort_by="Jet.pf.pt", pad=-1.0),
              "jet": ["Jet.pt", "Jet.eta"]}
    probs = sak.apply(tagger, events, inputs=inputs, outputs="probs")
    assert str(probs.type) == "200 * var * 3 * float32"
    jets = ak.flatten(events.Jet)  # the same jets, one row each, by hand
    parts = srdf.pad_jagged([jets.pf.pt, jets.pf.eta, jets.pf.phi], 4, pad=-1.0, sort_by=jets.pf.pt)
    jet = np.stack([ak.to_numpy(jets.pt), ak.to_numpy(jets.eta)], axis=1)
    want = _ort(tagger_path, particles=parts, jet=jet)[0]
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(probs, axis=1)), want, rtol=1e-5, atol=1e-6)
    assert ak.all(ak.num(probs, axis=1) == ak.num(events.Jet, axis=1))


def test_bad_columns_are_sofie_errors(events, dense_path) -> None:
    dense = sofie_root.compile(dense_path)
    flat = flat_events(events)[:50]
    with pytest.raises(SofieError, match="nope"):
        sak.apply(dense, flat, ["a", "b", "nope"])
    jets = _jets(50)
    mixed = ak.zip({"Jet": jets.Jet, "Other": ak.zip({"pt": jets.Jet.pt[:, :1]})}, depth_limit=1)
    with pytest.raises(InputError, match="different lengths"):
        sak.apply(dense, mixed, ["Jet.pt", "Jet.eta", "Other.pt"])
    with pytest.raises(SofieError, match="depth"):
        sak.apply(dense, flat, ["a", "b", "c"], depth=-1)
    with pytest.raises(SofieError, match="awkward"):
        sak.apply(dense, np.zeros((3, 3)), ["a", "b", "c"])


def _rdf_probs(path: str, tagger) -> np.ndarray:
    df = srdf.define(ROOT.RDataFrame("Events", path), "probs", tagger, inputs=INPUTS, outputs="probs")
    return np.array([np.asarray(v) for v in df.AsNumpy(["probs"])["probs"]], dtype=np.float32)


@pytest.fixture(scope="module")
def rntuple_file(rdf_dir, events):
    """The events as an RNTuple (uproot's mkrntuple), in two clusters."""
    path = rdf_dir / "events_rntuple.root"
    flat = flat_events(events)
    with uproot.recreate(path) as f:
        f.mkrntuple("Events", flat[: len(flat) // 2])
        f["Events"].extend(flat[len(flat) // 2:])
    return str(path)


@pytest.mark.parametrize("kind", ["ttree", "rntuple"])
def test_rdataframe_functor_on_ttree_and_rntuple(kind, data_file, rntuple_file, tagger_path, events) -> None:
    path = data_file if kind == "ttree" else rntuple_file
    tagger = sofie_root.compile(tagger_path)
    from_rdf = _rdf_probs(path, tagger)
    eager = uproot.open(path)["Events"].arrays()
    # batch-1 (functor) and batched Gemm kernels round differently in the last bits
    np.testing.assert_allclose(from_rdf, ak.to_numpy(sak.apply(tagger, eager, inputs=INPUTS, outputs="probs")),
                               rtol=1e-5, atol=1e-6)
    assert len(from_rdf) == len(events)


def test_uproot_dask_on_a_cluster_equals_the_functor(dask_client, data_file, rntuple_file, tagger_path) -> None:
    from tests.conftest import worker_pickling_stats

    dak = pytest.importorskip("dask_awkward")
    tagger = sofie_root.compile(tagger_path)
    before = worker_pickling_stats(dask_client)
    # uproot 5.7's opened RNTuple objects do not unpickle (KeyError '__setstate__' on the
    # scheduler): the RNTuple graph is built with open_files=False, which ships file names only
    for path, options in ((data_file, {"step_size": 1000}), (rntuple_file, {"open_files": False})):
        lazy = uproot.dask({path: "Events"}, **options)
        probs = sak.apply(tagger, lazy, inputs=INPUTS, outputs="probs")
        assert isinstance(probs, dak.Array) and lazy.npartitions >= (3 if path == data_file else 1)
        assert str(probs._meta.type).endswith("3 * float32")
        (needed,) = dak.report_necessary_columns(probs).values()  # only what the model reads is loaded
        assert set(needed) == {"pf_pt", "pf_eta", "pf_phi", "jet_pt", "jet_eta"}
        got = probs.compute(scheduler=dask_client)
        np.testing.assert_allclose(ak.to_numpy(got), _rdf_probs(path, tagger), rtol=1e-5, atol=1e-6)
    # the model reached the workers pickled, and each worker that ran a partition compiled it once
    after = worker_pickling_stats(dask_client)
    compiled = [after[w]["compiled"] - before[w]["compiled"] for w in after]
    assert max(compiled) == 1 and sum(compiled) >= 1


def test_variable_size_inputs_per_event(rdf_dir, events) -> None:
    # the particle dimension bound per event to the list's length (no padding): sums over particles
    model = sofie_root.compile(models.symbolic_particles(rdf_dir / "sym_ak.onnx"))
    flat = flat_events(events)[:200]
    sums = sak.apply(model, flat, srdf.Columns(["pf_pt", "pf_eta"], variable=True))
    assert len(sums) == 200
    want = np.stack([ak.to_numpy(ak.sum(flat.pf_pt, axis=1)), ak.to_numpy(ak.sum(flat.pf_eta, axis=1))], axis=1)
    np.testing.assert_allclose(ak.to_numpy(ak.Array(sums)), want, rtol=1e-5, atol=1e-5)
