"""sofie_root.compile(booster): XGBoost, LightGBM and scikit-learn tree ensembles trained here,
compared with the framework's own predict/predict_proba and with onnxruntime on the converted
model, with missing values (NaN) in the inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import sofie_root
from sofie_root.frontends.trees import trees_to_onnx

from .ort_check import run_ort

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")
ensemble = pytest.importorskip("sklearn.ensemble")

N_FEATURES = 7


def _data(seed: int = 0, nan: bool = True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, N_FEATURES)).astype(np.float32)
    y_bin = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] ** 2 + 0.3 > 0).astype(np.int64)
    y_multi = np.digitize(x[:, 0] + x[:, 3], [-0.7, 0.6]).astype(np.int64)
    y_reg = (np.sin(x[:, 0]) + x[:, 1] * x[:, 2]).astype(np.float32)
    if nan:
        x[rng.random(x.shape) < 0.12] = np.nan
    return x, y_bin, y_multi, y_reg


def _check(model, x, proba: bool, ort_too: bool = True):
    compiled = sofie_root.compile(model)
    got = compiled.infer(x)
    if proba:
        label, prob = got
        np.testing.assert_allclose(prob, model.predict_proba(x), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(label, model.predict(x))
    else:
        (pred,) = got
        expected = model.predict(x) if not isinstance(model, xgb.Booster) else model.predict(xgb.DMatrix(x))
        np.testing.assert_allclose(pred.reshape(-1), expected, rtol=1e-5, atol=1e-5)
    if ort_too:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = run_ort(trees_to_onnx(model), x)
        for g, r in zip(got, ref):
            if r.dtype.kind == "f":
                np.testing.assert_allclose(g, r.reshape(g.shape), rtol=1e-5, atol=1e-6)
            else:
                np.testing.assert_array_equal(g, r.reshape(g.shape))
    # one row at a time (the batch-1 path of the generated loop) gives the same numbers
    one = compiled.infer(x[3:4])
    for a, b in zip(one, got):
        np.testing.assert_array_equal(a, b[3:4])
    return compiled


@pytest.mark.parametrize("task", ["binary", "multi", "regression"])
def test_xgboost(task):
    x, yb, ym, yr = _data(1)
    if task == "regression":
        model = xgb.XGBRegressor(n_estimators=30, max_depth=4).fit(x, yr)
    else:
        model = xgb.XGBClassifier(n_estimators=30, max_depth=4).fit(x, yb if task == "binary" else ym)
    _check(model, x, proba=task != "regression")


def test_xgboost_booster():
    x, _, _, yr = _data(2)
    booster = xgb.train({"max_depth": 5, "eta": 0.3}, xgb.DMatrix(x, label=yr), num_boost_round=25)
    _check(booster, x, proba=False)


@pytest.mark.parametrize("task", ["binary", "multi", "regression"])
def test_lightgbm(task):
    x, yb, ym, yr = _data(3)
    if task == "regression":
        model = lgb.LGBMRegressor(n_estimators=30, num_leaves=15, verbose=-1).fit(x, yr)
    else:
        model = lgb.LGBMClassifier(n_estimators=30, num_leaves=15, verbose=-1).fit(x, yb if task == "binary" else ym)
    _check(model, x, proba=task != "regression")


def test_lightgbm_booster():
    x, yb, _, _ = _data(4)
    booster = lgb.train({"objective": "binary", "num_leaves": 15, "verbose": -1}, lgb.Dataset(x, label=yb),
                        num_boost_round=20)
    compiled = sofie_root.compile(booster)
    _label, prob = compiled.infer(x)
    np.testing.assert_allclose(prob[:, 1], booster.predict(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["GradientBoostingClassifier", "RandomForestClassifier", "ExtraTreesClassifier",
                                  "GradientBoostingRegressor", "RandomForestRegressor", "DecisionTreeRegressor"])
def test_sklearn(name):
    x, yb, ym, yr = _data(5, nan=False)  # these scikit-learn models refuse NaN
    if name.startswith("DecisionTree"):
        model = getattr(pytest.importorskip("sklearn.tree"), name)(max_depth=6, random_state=0)
    else:
        model = getattr(ensemble, name)(n_estimators=15, max_depth=4, random_state=0)
    if name.endswith("Regressor"):
        model.fit(x, yr)
    else:
        model.fit(x, ym if name.startswith("Gradient") else yb)
    _check(model, x, proba=name.endswith("Classifier"))


def test_not_a_tree_model_and_bad_options():
    with pytest.raises(sofie_root.SofieError, match="not an XGBoost"):
        trees_to_onnx(object())
    with pytest.raises(sofie_root.SofieError, match="is it trained"):
        sofie_root.compile(xgb.XGBRegressor())
    x, _, _, yr = _data(6)
    model = xgb.XGBRegressor(n_estimators=2, max_depth=2).fit(x, yr)
    with pytest.raises(sofie_root.SofieError, match="input_shapes= does not apply"):
        sofie_root.compile(model, input_shapes={"X": ["N", N_FEATURES]})


def test_saved_to_root_and_loaded(tmp_path):
    x, _, ym, _ = _data(7)
    model = lgb.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1).fit(x, ym)
    compiled = sofie_root.compile(model)
    path = tmp_path / "bdt.root"
    compiled.save(path)
    loaded = sofie_root.load(path)
    for a, b in zip(compiled.infer(x), loaded.infer(x)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loaded.infer(x)[1], model.predict_proba(x), rtol=1e-5, atol=1e-6)
