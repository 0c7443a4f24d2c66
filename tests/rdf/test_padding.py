"""The two implementations of the column-to-input mapping agree exactly: the C++ adapter in the
functor (sofie_rdf.hxx) and the numpy one (rdf/padding.py) used by model.infer on awkward arrays
and by sofie_root.rdf.evaluate. An identity model returns the padded input itself."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import ROOT
import sofie_root.rdf as srdf

import sofie_root
from sofie_root import SofieError

from . import models
from .conftest import flat_events


def rows(df, name: str) -> np.ndarray:
    return np.array([np.asarray(v) for v in df.AsNumpy([name])[name]], dtype=np.float32)


def test_pad_jagged_by_hand():
    pt = ak.Array([[1.0, 3.0, 2.0, 3.0], [], [5.0]])
    eta = ak.Array([[0.1, 0.2, 0.3, 0.4], [], [0.5]])
    x = srdf.pad_jagged([pt, eta], 3, pad=-1, sort_by=pt)
    expected = np.array([[[3, 0.2], [3, 0.4], [2, 0.3]],  # ties keep their stored order
                         [[-1, -1], [-1, -1], [-1, -1]],
                         [[5, 0.5], [-1, -1], [-1, -1]]], dtype=np.float32)
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(srdf.pad_jagged([pt, eta], 2, layout="FP")[0],
                                  np.array([[1, 3], [0.1, 0.2]], dtype=np.float32))
    np.testing.assert_array_equal(srdf.pad_jagged([pt], 2, sort_by=pt, descending=False, layout="P"),
                                  [[1, 2], [0, 0], [5, 0]])
    with pytest.raises(SofieError, match="other lengths"):
        srdf.pad_jagged([pt, ak.Array([[1.0], [], [2.0]])], 2)


CASES = [
    # (model input shape, columns, Columns options)
    (["N", 5, 3], ["pf_pt", "pf_eta", "pf_phi"], {"sort_by": "pf_pt", "pad": -1.0}),
    (["N", 5, 3], ["pf_pt", "pf_eta", "pf_phi"], {}),
    (["N", 2, 6], ["pf_eta", "pf_q"], {"sort_by": "pf_pt", "descending": False, "pad": 9.0}),  # FP
    (["N", 4], ["pf_q"], {"sort_by": "pf_eta"}),  # [1, P]
]


@pytest.mark.parametrize(("shape", "cols", "options"), CASES)
def test_functor_and_numpy_padding_agree(rdf_dir, data_file, events, shape, cols, options):
    path = models.identity(rdf_dir / f"id_{'_'.join(map(str, shape))}.onnx", shape)
    df = ROOT.RDataFrame("Events", data_file)
    got = rows(srdf.define(df, "x", path, srdf.Columns(cols, **options)), "x")
    flat = flat_events(events)
    ref = srdf.evaluate(path, flat, srdf.Columns(cols, **options))
    assert got.shape == ref.shape == (len(events), int(np.prod(shape[1:])))
    np.testing.assert_array_equal(got, ref)
    P = shape[1] if len(shape) == 2 or shape[2] == len(cols) else shape[2]
    layout = "P" if len(shape) == 2 else ("PF" if shape[2] == len(cols) else "FP")
    direct = srdf.pad_jagged([flat[c] for c in cols], P, layout=layout,
                             sort_by=flat[options["sort_by"]] if "sort_by" in options else None,
                             descending=options.get("descending", True), pad=options.get("pad", 0.0))
    np.testing.assert_array_equal(got, direct.reshape(len(events), -1))


def test_model_infer_takes_awkward_particle_lists(rdf_dir, data_file, events):
    """model.infer pads awkward lists like the functor's defaults (pad 0, stored order)."""
    path = models.identity(rdf_dir / "id_infer.onnx", ["N", 5, 2])
    model = sofie_root.compile(path)
    particles = ak.zip({"pt": events.pf.pt, "eta": events.pf.eta})  # N * var * {pt, eta}
    got = model(particles)
    df = ROOT.RDataFrame("Events", data_file)
    np.testing.assert_array_equal(got, rows(srdf.define(df, "x", model, ["pf_pt", "pf_eta"]), "x"))
    stacked = ak.concatenate([events.pf.pt[:, :, None], events.pf.eta[:, :, None]], axis=2)  # N * var * 2
    np.testing.assert_array_equal(model(stacked), got)
    fp = sofie_root.compile(models.identity(rdf_dir / "id_fp.onnx", ["N", 2, 5]))
    np.testing.assert_array_equal(fp(particles).reshape(-1, 2, 5).transpose(0, 2, 1).reshape(len(events), -1), got)


def test_model_infer_takes_awkward_records_of_scalars(dense_path, events):
    model = sofie_root.compile(dense_path)
    rec = ak.zip({"a": events.a, "b": events.b, "c": events.c})
    x = np.stack([events.a.to_numpy(), events.b.to_numpy(), events.c.to_numpy()], axis=1).astype(np.float32)
    np.testing.assert_array_equal(model(rec), model(x))


def test_tagger_columnar_and_event_loop_agree(tagger_path, data_file, events):
    model = sofie_root.compile(tagger_path)
    inputs = {"particles": srdf.Columns(["pf_pt", "pf_eta", "pf_phi"], sort_by="pf_pt"),
              "jet": ["jet_pt", "jet_eta"]}
    ref = srdf.evaluate(model, flat_events(events), inputs=inputs, outputs="probs")
    got = rows(srdf.define(ROOT.RDataFrame("Events", data_file), "p", model, inputs=inputs, outputs="probs"), "p")
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # model.infer on awkward records (stored order) equals the functor without sort_by
    parts = ak.zip({"pt": events.pf.pt, "eta": events.pf.eta, "phi": events.pf.phi})
    jet = np.stack([events.jet_pt.to_numpy(), events.jet_eta.to_numpy()], axis=1)
    plain = {"particles": ["pf_pt", "pf_eta", "pf_phi"], "jet": ["jet_pt", "jet_eta"]}
    got2 = rows(srdf.define(ROOT.RDataFrame("Events", data_file), "p", model, inputs=plain, outputs="probs"), "p")
    np.testing.assert_allclose(model.infer(parts, jet)[0], got2, rtol=1e-5, atol=1e-6)
