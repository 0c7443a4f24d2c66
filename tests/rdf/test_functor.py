"""sofie_root.functor and sofie_root.rdf.define on local RDataFrames: every column shape, several
inputs and outputs, the three call forms, threads, Filters, Ranges, chains, and errors at Define."""

from __future__ import annotations

import json

import numpy as np
import pytest
import ROOT
import sofie_root.rdf as srdf

import sofie_root
from sofie_root import SofieError

from . import models
from .conftest import flat_events, make_events, write_events

SCALARS = ["a", "b", "c"]


def column(df, name: str) -> np.ndarray:
    values = df.AsNumpy([name])[name]
    if values.dtype == object:
        return np.array([np.asarray(v) for v in values], dtype=np.float32)
    return np.asarray(values)


def dense_reference(model, events, cols) -> np.ndarray:
    x = np.stack([np.asarray(events[c]).astype(np.float32) for c in cols], axis=1)
    return model(x)[:, 0]


def test_define_with_cpp_functor_matches_infer(dense_path, data_file, events):
    model = sofie_root.compile(dense_path)
    df = ROOT.RDataFrame("Events", data_file)
    f = sofie_root.functor(model, SCALARS, df=df)
    assert sofie_root.functor is srdf.functor
    assert f.plan.return_type == "float" and f.columns == SCALARS
    got = column(df.Define("score", f, f.columns), "score")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, dense_reference(model, events, SCALARS), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cols", [["c", "d", "e"], ["flag", "a", "d"], ["jet_pt", "b", "e"]])
def test_scalar_columns_of_any_arithmetic_type(dense_path, data_file, events, cols):
    model = sofie_root.compile(dense_path)
    df = ROOT.RDataFrame("Events", data_file)
    got = column(srdf.define(df, "score", model, cols), "score")
    np.testing.assert_allclose(got, dense_reference(model, events, cols), rtol=1e-5, atol=1e-6)


def test_three_call_forms_agree(dense_path, data_file):
    df = ROOT.RDataFrame("Events", data_file)
    plain = srdf.functor(dense_path, SCALARS, df=df)
    slot = srdf.functor(dense_path, SCALARS, df=df, slot=True)
    a = column(df.Define("s", plain, plain.columns), "s")
    b = column(df.DefineSlot("s", slot, slot.columns), "s")
    c = column(df.Define("s", slot, ["rdfslot_", *slot.columns]), "s")
    d = column(srdf.define(df, "s", dense_path, SCALARS), "s")
    assert np.array_equal(a, b) and np.array_equal(a, c) and np.array_equal(a, d)
    assert slot.sessions() == 1 and plain.sessions() == 1


def test_path_without_dataframe_defaults_to_model_types(dense_path, data_file, events):
    df = ROOT.RDataFrame("Events", data_file).Define("bf", "float(b)").Define("cf", "float(c)")
    f = srdf.functor(dense_path, ["a", "bf", "cf"])
    got = column(df.Define("s", f, f.columns), "s")
    np.testing.assert_allclose(got, dense_reference(sofie_root.compile(dense_path), events, SCALARS),
                               rtol=1e-5, atol=1e-6)
    g = srdf.functor(dense_path, SCALARS, types={"b": "double", "c": "int"})
    assert np.array_equal(column(df.Define("s", g, g.columns), "s"), got)
    # the DESIGN contract: no columns given to functor, only to Define (float columns, model order)
    h = sofie_root.functor(dense_path)
    assert np.array_equal(column(df.Define("s", h, ["a", "bf", "cf"]), "s"), got)


def test_identical_with_implicit_mt_after_filter_and_on_chains(dense_path, rdf_dir, events):
    other = make_events(2000, seed=5)
    f2 = str(rdf_dir / "events_b.root")
    write_events(f2, other)
    files = [str(rdf_dir / "events.root"), f2]

    def run():
        df = ROOT.RDataFrame("Events", files).Filter("c > -3")
        df = srdf.define(df, "s", dense_path, SCALARS)
        df2 = df.Define("s2", srdf.functor(dense_path, SCALARS, df=df), SCALARS)
        out = df2.AsNumpy(["s", "s2", "a", "b"])
        order = np.lexsort((out["b"], out["a"]))  # MT changes the entry order, not the values
        return out["s"][order], out["s2"][order]

    s_st, s2_st = run()
    assert len(s_st) == int(np.sum(events.c > -3) + np.sum(other.c > -3))
    ROOT.EnableImplicitMT(2)
    try:
        df = ROOT.RDataFrame("Events", files)
        f = srdf.functor(dense_path, SCALARS, df=df, slot=True)
        df.DefineSlot("s", f, f.columns).Sum("s").GetValue()
        assert 1 <= f.sessions() <= df.GetNSlots()
        s_mt, s2_mt = run()
    finally:
        ROOT.DisableImplicitMT()
    assert np.array_equal(s_st, s_mt) and np.array_equal(s2_st, s2_mt) and np.array_equal(s_st, s2_st)


def test_range(dense_path, data_file, events):
    model = sofie_root.compile(dense_path)
    df = ROOT.RDataFrame("Events", data_file).Range(100, 400, 3)
    got = column(srdf.define(df, "s", model, SCALARS), "s")
    ref = dense_reference(model, events[100:400:3], SCALARS)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_particles_and_jet_inputs_and_output_choice(tagger_path, data_file, events):
    model = sofie_root.compile(tagger_path)
    df = ROOT.RDataFrame("Events", data_file)
    inputs = {"particles": srdf.Columns(["pf_pt", "pf_eta", "pf_phi"], sort_by="pf_pt", pad=-1.0),
              "jet": ["jet_pt", "jet_eta"]}
    probs = srdf.functor(model, inputs=inputs, outputs="probs", df=df)
    both = srdf.functor(model, inputs=inputs, outputs=["total", 0], df=df)
    total = srdf.functor(model, inputs=inputs, outputs="total", df=df)
    assert (probs.plan.return_type, both.plan.return_type, total.plan.return_type) == \
        ("ROOT::RVecF", "ROOT::RVecF", "float")
    assert probs.columns == ["pf_pt", "pf_eta", "pf_phi", "jet_pt", "jet_eta"]
    d = df.Define("s_p", probs, probs.columns).Define("s_b", both, both.columns).Define("s_t", total, total.columns)
    p, b, t = column(d, "s_p"), column(d, "s_b"), column(d, "s_t")
    assert p.shape == (len(events), 3) and b.shape == (len(events), 4)
    assert np.array_equal(b[:, 0], t) and np.array_equal(b[:, 1:], p)
    ref = srdf.evaluate(model, flat_events(events), inputs=inputs, outputs="probs")
    np.testing.assert_allclose(p, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


def test_model_by_name_in_a_root_file(rdf_dir, dense_path, tagger_path, data_file, events):
    path = rdf_dir / "two_models.root"
    sofie_root.compile(dense_path).save(path, "dense", columns=SCALARS, overwrite=True)
    sofie_root.compile(dense_path).save(path, "swapped", columns=["b", "a", "c"], overwrite=True)
    df = ROOT.RDataFrame("Events", data_file)
    d = srdf.define(srdf.define(df, "s1", f"{path}:dense"), "s2", f"{path}:swapped")
    model = sofie_root.compile(dense_path)
    np.testing.assert_allclose(column(d, "s1"), dense_reference(model, events, SCALARS), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(column(d, "s2"), dense_reference(model, events, ["b", "a", "c"]), rtol=1e-5,
                               atol=1e-6)


def test_std_vector_columns(tagger_path, data_file, events):
    df = ROOT.RDataFrame("Events", data_file)
    for c in ("pf_pt", "pf_eta", "pf_phi"):
        df = df.Define(f"v_{c}", f"std::vector<double>({c}.begin(), {c}.end())")
    assert "vector<double>" in str(df.GetColumnType("v_pf_pt"))
    plain = {"particles": ["pf_pt", "pf_eta", "pf_phi"], "jet": ["jet_pt", "jet_eta"]}
    vec = {"particles": ["v_pf_pt", "v_pf_eta", "v_pf_phi"], "jet": ["jet_pt", "jet_eta"]}
    d = srdf.define(srdf.define(df, "p1", tagger_path, inputs=plain, outputs="total"), "p2", tagger_path,
                    inputs=vec, outputs="total")
    np.testing.assert_allclose(column(d, "p1"), column(d, "p2"), rtol=1e-6)


def test_symbolic_particle_dimension_needs_dims(rdf_dir, data_file, events):
    path = models.symbolic_particles(rdf_dir / "sym.onnx")
    df = ROOT.RDataFrame("Events", data_file)
    with pytest.raises(SofieError, match="symbolic"):
        srdf.functor(path, ["pf_pt", "pf_eta"], df=df)
    f = srdf.functor(path, ["pf_pt", "pf_eta"], df=df, dims={"P": 3})
    g = srdf.functor(path, srdf.Columns(["pf_pt", "pf_eta"], length=3), df=df)
    got = column(df.Define("y", f, f.columns), "y")
    assert np.array_equal(got, column(df.Define("y", g, g.columns), "y"))
    pt = flat_events(events).pf_pt
    ref = np.array([float(np.sum(np.asarray(v, dtype=np.float32)[:3])) for v in pt.tolist()], dtype=np.float32)
    np.testing.assert_allclose(got[:, 0], ref, rtol=1e-5, atol=1e-5)


def test_columns_stored_with_the_model(rdf_dir, data_file, events):
    path = models.dense(rdf_dir / "dense_meta.onnx", columns=["a", "b", "c"])
    model = sofie_root.compile(path)
    df = ROOT.RDataFrame("Events", data_file)
    got = column(srdf.define(df, "s", model), "s")
    np.testing.assert_allclose(got, dense_reference(model, events, SCALARS), rtol=1e-5, atol=1e-6)
    renamed = ROOT.RDataFrame(10).Define("a_new", "1.f").Define("b", "1.0").Define("c", "1")
    with pytest.raises(SofieError, match="'a' is not in the dataframe"):
        srdf.define(renamed, "s", model)
    assert json.loads(model.graph.metadata["onnx:sofie_root.columns"]) == SCALARS


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"columns": ["a", "b"]}, "dimension is 3, the columns give 2"),
    ({"columns": ["a", "b", "nope"]}, "'nope' is not in the dataframe"),
    ({"columns": ["a", "b", "name"]}, "'name' has type .*string.*only arithmetic"),
    ({"columns": ["a", "b", "pf_pt"]}, "mixes scalar columns"),
    ({"columns": ["a", "b", "c"], "outputs": "zzz"}, "unknown output"),
    ({"inputs": {"x": ["a", "b", "c"], "w": ["a"]}}, "not inputs of the model"),
    ({}, "no columns given"),
])
def test_errors_at_definition(dense_path, data_file, kwargs, message):
    df = ROOT.RDataFrame("Events", data_file).Define("name", 'std::string("x")')
    with pytest.raises(SofieError, match=message):
        srdf.functor(dense_path, df=df, **kwargs)
    with pytest.raises(SofieError, match=message):
        srdf.define(df, "s", dense_path, **kwargs)


def test_multi_input_errors(tagger_path, data_file):
    df = ROOT.RDataFrame("Events", data_file)
    with pytest.raises(SofieError, match=r"fed by no columns"):
        srdf.functor(tagger_path, inputs={"particles": ["pf_pt", "pf_eta", "pf_phi"]}, outputs=0, df=df)
    with pytest.raises(SofieError, match="has 2 inputs"):
        srdf.functor(tagger_path, ["jet_pt"], df=df)
    with pytest.raises(SofieError, match="choose with outputs"):
        srdf.functor(tagger_path, inputs={"particles": ["pf_pt", "pf_eta", "pf_phi"],
                                                "jet": ["jet_pt", "jet_eta"]}, df=df)
    with pytest.raises(SofieError, match="neither the last"):
        srdf.functor(tagger_path, inputs={"particles": ["pf_pt", "pf_eta"], "jet": ["jet_pt", "jet_eta"]},
                           outputs=0, df=df)


def test_length_mismatch_in_a_group_is_reported(tagger_path):
    df = ROOT.RDataFrame(3).Define("x", "ROOT::RVecF(rdfentry_ + 1, 1.f)").Define("y", "ROOT::RVecF(2, 1.f)") \
        .Define("j", "1.f")
    d = srdf.define(df, "p", tagger_path, inputs={"particles": ["x", "y", "x"], "jet": ["j", "j"]}, outputs=0)
    with pytest.raises(Exception, match="column 'y' has 2 elements where the first has 1"):
        d.Define("p0", "p[0]").Sum("p0").GetValue()
