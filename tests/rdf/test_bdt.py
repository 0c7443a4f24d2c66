"""BDTs in RDataFrame: an XGBoost and a LightGBM classifier trained here, compiled with
sofie_root.compile(booster) and run through sofie_root.rdf.define / sofie_root.functor over a
ROOT file with missing values, equal to the framework's predict_proba (1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
import ROOT
import sofie_root.rdf as srdf
import uproot

import sofie_root

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")

COLUMNS = ["m_jj", "m_jjj", "pt_l", "eta_l", "met"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    rng = np.random.default_rng(4)
    n = 2000
    x = rng.normal(size=(n, len(COLUMNS))).astype(np.float32)
    y = (x[:, 0] * x[:, 1] + x[:, 2] - 0.5 * x[:, 4] > 0).astype(np.int64)
    x[rng.random(x.shape) < 0.1] = np.nan
    path = tmp_path_factory.mktemp("bdt") / "events.root"
    with uproot.recreate(path) as f:
        f["Events"] = {c: x[:, i] for i, c in enumerate(COLUMNS)}
    return str(path), x, y


@pytest.mark.parametrize("framework", ["xgboost", "lightgbm"])
def test_bdt_in_rdataframe_equals_predict_proba(sample, framework):
    path, x, y = sample
    if framework == "xgboost":
        model = xgb.XGBClassifier(n_estimators=40, max_depth=5, n_jobs=1).fit(x, y)
    else:
        model = lgb.LGBMClassifier(n_estimators=40, num_leaves=20, n_jobs=1, verbose=-1).fit(x, y)
    compiled = sofie_root.compile(model)
    df = ROOT.RDataFrame("Events", path)
    f = sofie_root.functor(compiled, COLUMNS, df=df, outputs=1)  # output 1: the probabilities
    df = df.Define("p", f, f.columns)
    df = srdf.define(df, "label", compiled, COLUMNS, outputs=0)
    got = df.AsNumpy(["p", "label"])
    prob = np.array([np.asarray(v) for v in got["p"]], dtype=np.float32)
    np.testing.assert_allclose(prob, model.predict_proba(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got["label"]).astype(np.int64), model.predict(x))
