"""Tree-ensemble importer: XGBoost, LightGBM and scikit-learn models to ONNX, in memory.

``sofie_root.compile(booster)`` calls :func:`trees_to_onnx`, which converts the model with the
framework's ONNX converter (onnxmltools for XGBoost/LightGBM, skl2onnx for scikit-learn; the
``bdt`` extra installs them) into ai.onnx.ml ``TreeEnsembleClassifier``/``Regressor`` nodes, then
compiled like any ONNX model (see :mod:`sofie_root.ops.ml`). The converters are imported only
when such a model is given.

The model takes one float32 input ``X`` of shape ``[N, n_features]``. Classifiers return
``(label, probabilities)`` (int64 ``[N]``, float32 ``[N, classes]``: the probability tensor, not
the ``ZipMap`` list of dicts); regressors return ``[N, 1]`` float32.
"""

from __future__ import annotations

from ..errors import ModelLoadError

#: top-level modules whose models this importer takes
FRAMEWORKS = ("xgboost", "lightgbm", "sklearn")


def framework_of(obj: object) -> str | None:
    """'xgboost', 'lightgbm' or 'sklearn' when ``obj``'s class comes from it (without importing)."""
    for cls in type(obj).__mro__:
        top = (cls.__module__ or "").split(".", 1)[0]
        if top in FRAMEWORKS:
            return top
    return None


def _need(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ModelLoadError(f"compiling a {what} model needs {module.split('.')[0]} "
                             "(pip install 'sofie-root[bdt]')") from e


def _n_features(model: object, kind: str) -> int:
    for attr in ("n_features_in_", "n_features_"):
        n = getattr(model, attr, None)
        if isinstance(n, int) and n > 0:
            return n
    if kind == "xgboost" and hasattr(model, "num_features"):
        return int(model.num_features())
    if kind == "lightgbm" and hasattr(model, "num_feature"):
        return int(model.num_feature())
    raise ModelLoadError(f"cannot tell the number of input features of this {type(model).__name__} "
                         "(is it trained?); pass n_features=")


def trees_to_onnx(model: object, *, n_features: int | None = None, dynamic_batch: bool = True,
                  input_name: str = "X"):
    """Convert a trained XGBoost, LightGBM or scikit-learn tree model to an ``onnx.ModelProto``.

    Args:
        model: ``xgboost.Booster``/``XGBClassifier``/``XGBRegressor``, ``lightgbm.Booster``/
            ``LGBMClassifier``/``LGBMRegressor``, or a scikit-learn tree ensemble
            (``GradientBoosting*``, ``RandomForest*``, ``ExtraTrees*``, ``DecisionTree*``).
        n_features: the number of input features, when the model does not record it.
        dynamic_batch: keep the batch dimension symbolic (``N``); otherwise it is 1.
        input_name: name of the model's input.
    """
    kind = framework_of(model)
    if kind is None:
        raise ModelLoadError(f"{type(model).__name__} is not an XGBoost, LightGBM or scikit-learn model")
    nf = int(n_features) if n_features is not None else _n_features(model, kind)
    proto = _convert(model, kind, nf, None if dynamic_batch else 1, input_name)
    # some converters declare the label output as [1] whatever the batch: every output's first
    # dimension is the batch
    for out in proto.graph.output:
        tt = out.type.tensor_type if out.type.HasField("tensor_type") else None
        if tt is not None and tt.HasField("shape") and len(tt.shape.dim):
            dim = tt.shape.dim[0]
            if dynamic_batch:
                dim.dim_param = "N"
            else:
                dim.dim_value = 1
    return proto


def _convert(model: object, kind: str, nf: int, batch: int | None, input_name: str):
    try:
        if kind == "sklearn":
            skl2onnx = _need("skl2onnx", "scikit-learn")
            from skl2onnx.common.data_types import FloatTensorType as SkFloat

            options = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None
            return skl2onnx.convert_sklearn(model, initial_types=[(input_name, SkFloat([batch, nf]))],
                                            options=options)
        onnxmltools = _need("onnxmltools", kind)
        from onnxmltools.convert.common.data_types import FloatTensorType

        types = [(input_name, FloatTensorType([batch, nf]))]
        if kind == "xgboost":
            return onnxmltools.convert_xgboost(_xgb_plain_names(model), initial_types=types)
        return onnxmltools.convert_lightgbm(model, initial_types=types, zipmap=False)
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"the {kind} converter could not convert this {type(model).__name__}: "
                             f"{type(e).__name__}: {str(e)[:400]}") from e


def _xgb_plain_names(model: object) -> object:
    """onnxmltools reads split features as ``f<index>``: a model trained with named features
    (a pandas DataFrame) is converted from a copy whose features are unnamed."""
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    if getattr(booster, "feature_names", None) is None:
        return model
    copy = booster.copy()
    copy.feature_names = None
    copy.feature_types = None
    if booster is model:
        return copy
    clone = type(model)(**model.get_params())
    clone._Booster = copy
    for attr in ("n_classes_", "classes_", "n_features_in_", "objective"):
        if hasattr(model, attr):
            try:
                setattr(clone, attr, getattr(model, attr))
            except AttributeError:
                pass
    return clone
