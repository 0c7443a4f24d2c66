"""Keras 3 importer (torch backend): every supported layer and activation agrees with Keras."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

import sofie_root  # noqa: E402
from sofie_root.frontends.keras import SUPPORTED_ACTIVATIONS, SUPPORTED_LAYERS  # noqa: E402

L = keras.layers
RTOL, ATOL = 1e-4, 1e-5


def to_numpy(x) -> np.ndarray:
    """A Keras (torch backend) tensor as numpy (keras.ops.convert_to_numpy warns under numpy 2)."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _inputs(model, batch: int, seed: int, int_high: int = 10) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    xs = []
    for kt in model.inputs:
        shape = (batch, *kt.shape[1:])
        if "int" in str(kt.dtype):
            xs.append(rng.integers(0, int_high, shape).astype(str(kt.dtype)))
        else:
            xs.append(rng.standard_normal(shape).astype(np.float32))
    return xs


def check(model, batches=(1, 9), compiled=None, seed=0) -> sofie_root.Model:
    """Compile ``model`` and compare with Keras at each batch size."""
    m = compiled if compiled is not None else sofie_root.compile(model)
    for b in batches:
        xs = _inputs(model, b, seed + b)
        ref = model(xs if len(xs) > 1 else xs[0])
        refs = ref if isinstance(ref, (list, tuple)) else [ref]
        got = m.infer(*xs)
        assert len(got) == len(refs)
        for g, r in zip(got, refs):
            r = to_numpy(r)
            assert g.shape == r.shape, (g.shape, r.shape)
            np.testing.assert_allclose(g, r, rtol=RTOL, atol=ATOL)
    return m


def _randomize_bn(model) -> None:
    rng = np.random.default_rng(42)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.standard_normal(n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
            if layer.center:
                layer.beta.assign(rng.standard_normal(n).astype(np.float32))


def test_dense_mlp_keeps_a_symbolic_batch() -> None:
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((7,)), L.Dense(32, activation="relu"), L.Dropout(0.3),
                          L.Dense(16, activation="tanh", use_bias=False), L.Dense(3, activation="softmax")])
    model = check(m, batches=(1, 64))
    assert model.inputs[0].shape == ("N", 7) and model.outputs[0].shape == ("N", 3)


def test_conv2d_channels_last_with_a_single_transpose() -> None:
    keras.utils.set_random_seed(1)
    m = keras.Sequential([
        keras.Input((12, 12, 2)),
        L.Conv2D(4, 3, padding="same", activation="relu"),
        L.BatchNormalization(),
        L.MaxPooling2D(),
        L.Conv2D(6, (3, 2), strides=(2, 1), dilation_rate=1, padding="valid"),
        L.ReLU(max_value=6.0),
        L.AveragePooling2D(2, padding="same"),
        L.SpatialDropout2D(0.2),
        L.Flatten(),
        L.Dense(2),
    ])
    _randomize_bn(m)
    model = check(m)
    # one Transpose into channels-first; the Dense after Flatten reads the channels-first data
    # with permuted kernel rows instead of a Transpose back
    assert [n.op_type for n in model.graph.nodes].count("Transpose") == 1
    # when the flattened data is also a model output, the Keras order is still produced for it
    x = keras.Input((6, 6, 2))
    flat = L.Flatten()(L.Conv2D(3, 3)(x))
    check(keras.Model(x, [L.Dense(2)(flat), flat]))


def test_conv_branches_concatenated_along_channels_stay_channels_first() -> None:
    keras.utils.set_random_seed(2)
    x = keras.Input((9, 9, 3))
    a = L.Conv2D(4, 3, padding="same", activation="elu")(x)
    b = L.Conv2D(4, 1, activation="selu")(x)
    h = L.Concatenate()([a, b])
    h = L.Add()([L.Conv2D(5, 3)(h), L.Conv2D(5, 3)(h)])
    h = L.BatchNormalization(center=False)(h)
    h = L.LeakyReLU(negative_slope=0.1)(h)
    g1 = L.GlobalAveragePooling2D()(h)
    g2 = L.GlobalMaxPooling2D()(h)
    out = L.Dense(3, activation="sigmoid")(L.Concatenate()([g1, g2]))
    m = keras.Model(x, out)
    _randomize_bn(m)
    model = check(m)
    assert [n.op_type for n in model.graph.nodes].count("Transpose") == 1


def test_conv1d_pooling_and_channels_first_data() -> None:
    keras.utils.set_random_seed(3)
    m = keras.Sequential([
        keras.Input((20, 4)),
        L.Conv1D(6, 3, padding="causal", activation="gelu"),
        L.Conv1D(6, 3, strides=2, padding="same", dilation_rate=1),
        L.MaxPooling1D(2),
        L.Conv1D(5, 2, dilation_rate=2, activation="swish"),
        L.AveragePooling1D(2, strides=1),
        L.GlobalMaxPooling1D(keepdims=True),
        L.Flatten(),
    ])
    check(m)
    m = keras.Sequential([keras.Input((3, 8, 8)), L.Conv2D(4, 3, data_format="channels_first"),
                          L.MaxPooling2D(data_format="channels_first"),
                          L.GlobalAveragePooling2D(data_format="channels_first"), L.Dense(2)])
    check(m)


def test_layer_normalization_reshape_permute_merges() -> None:
    keras.utils.set_random_seed(4)
    a = keras.Input((6,))
    b = keras.Input((6,))
    h1, h2 = L.Dense(8)(a), L.Dense(8)(b)
    merged = L.Concatenate()([L.Add()([h1, h2]), L.Subtract()([h1, h2]), L.Multiply()([h1, h2]),
                              L.Average()([h1, h2]), L.Maximum()([h1, h2]), L.Minimum()([h1, h2])])
    h = L.Reshape((6, 8))(merged)
    h = L.LayerNormalization()(h)
    h = L.Permute((2, 1))(h)
    h = L.LayerNormalization(axis=[1, 2], center=False)(h)
    h = L.Reshape((-1,))(h)
    m = keras.Model([a, b], [L.Dense(1)(h), L.Activation("tanh")(h)])
    model = check(m)
    assert len(model.outputs) == 2


def test_embedding_and_recurrent_layers() -> None:
    keras.utils.set_random_seed(5)
    m = keras.Sequential([
        keras.Input((8,), dtype="int32"),
        L.Embedding(10, 4),
        L.LSTM(6, return_sequences=True),
        L.GRU(5, return_sequences=True),
        L.GRU(5, return_sequences=True, reset_after=False),
        L.SimpleRNN(4, return_sequences=True, activation="relu"),
        L.LSTM(3),
        L.Dense(1, activation="sigmoid"),
    ])
    check(m)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
def test_bidirectional(merge_mode) -> None:
    keras.utils.set_random_seed(6)
    m = keras.Sequential([
        keras.Input((7, 3)),
        L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode=merge_mode),
        L.Bidirectional(L.GRU(3), merge_mode=merge_mode),
    ])
    check(m)
    m = keras.Sequential([keras.Input((7, 3)), L.Bidirectional(L.SimpleRNN(3, return_sequences=True),
                                                                merge_mode=merge_mode)])
    check(m)


def test_go_backwards_and_return_state() -> None:
    keras.utils.set_random_seed(7)
    x = keras.Input((6, 3))
    seq = L.SimpleRNN(4, return_sequences=True, go_backwards=True)(x)
    out, h, c = L.LSTM(5, return_state=True)(seq)
    g, gh = L.GRU(2, return_state=True, go_backwards=True, recurrent_activation="hard_sigmoid")(x)
    m = keras.Model(x, [out, h, c, g, gh])
    check(m)


def test_variable_sequence_length() -> None:
    keras.utils.set_random_seed(8)
    m = keras.Sequential([keras.Input((None, 3)), L.LSTM(4, return_sequences=True), L.Dense(2)])
    model = sofie_root.compile(m)
    assert model.inputs[0].shape[0] == "N" and isinstance(model.inputs[0].shape[1], str)
    for t in (1, 5, 11):
        x = np.random.default_rng(t).standard_normal((2, t, 3)).astype(np.float32)
        np.testing.assert_allclose(model(x), to_numpy(m(x)), rtol=RTOL, atol=ATOL)


ACTIVATION_NAMES = list(SUPPORTED_ACTIVATIONS)


@pytest.mark.parametrize("chunk", range(3))
def test_every_builtin_activation(chunk) -> None:
    keras.utils.set_random_seed(9)
    names = ACTIVATION_NAMES[chunk::3]
    x = keras.Input((6,))
    h = L.Dense(6)(x)
    outs = [L.Activation(n)(h) for n in names]
    m = keras.Model(x, outs)
    # scale the first layer so values cover the interesting ranges (|x| > 1, around the kinks)
    w = m.layers[1]
    w.kernel.assign(to_numpy(w.kernel.value) * 3.0)
    check(m)


def test_activation_layers() -> None:
    keras.utils.set_random_seed(10)
    x = keras.Input((5, 4))
    outs = [L.ReLU()(x), L.ReLU(negative_slope=0.1, threshold=0.3)(x), L.ReLU(max_value=0.5)(x),
            L.LeakyReLU()(x), L.ELU(alpha=0.7)(x), L.PReLU()(x), L.PReLU(shared_axes=[1])(x),
            L.Softmax(axis=1)(x), L.Softmax()(x)]
    m = keras.Model(x, outs)
    for layer in m.layers:
        if isinstance(layer, L.PReLU):
            layer.alpha.assign(np.random.default_rng(0).uniform(0, 0.5, layer.alpha.shape).astype(np.float32))
    check(m)


def test_nested_models_and_keras_file(tmp_path) -> None:
    keras.utils.set_random_seed(11)
    inner = keras.Sequential([keras.Input((4,)), L.Dense(6, activation="relu"), L.Dense(3)], name="inner")
    x = keras.Input((4,))
    m = keras.Model(x, L.Add()([inner(x), L.Dense(3)(x)]))
    check(m)
    path = tmp_path / "model.keras"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # keras' numpy conversion under numpy 2
        m.save(path)
    model = sofie_root.compile(str(path))
    check(m, compiled=model)
    model = sofie_root.compile(path, dynamic_batch=False)
    assert model.inputs[0].shape == (1, 4)


def test_unsupported_layer_is_named() -> None:
    m = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2DTranspose(2, 3, name="upsampler")])
    with pytest.raises(sofie_root.ExportError, match=r"'upsampler' \(Conv2DTranspose\).*not supported"):
        sofie_root.compile(m)
    m = keras.Sequential([keras.Input((5,), dtype="int32"), L.Embedding(10, 3, mask_zero=True), L.LSTM(2)])
    with pytest.raises(sofie_root.ExportError, match="mask"):
        sofie_root.compile(m)
    with pytest.raises(sofie_root.ExportError, match=r"not built|Input"):
        sofie_root.compile(keras.Sequential([L.Dense(2)]))


def test_supported_layers_list() -> None:
    for name in ["Dense", "Conv1D", "Conv2D", "MaxPooling1D", "MaxPooling2D", "AveragePooling1D",
                 "AveragePooling2D", "GlobalAveragePooling1D", "GlobalMaxPooling2D", "BatchNormalization",
                 "LayerNormalization", "Dropout", "Flatten", "Reshape", "Permute", "Concatenate", "Add",
                 "Subtract", "Multiply", "Average", "Embedding", "SimpleRNN", "GRU", "LSTM", "Bidirectional"]:
        assert name in SUPPORTED_LAYERS
    from keras.src.activations import ALL_OBJECTS

    builtin = {f.__name__ for f in ALL_OBJECTS} - {"threshold"}  # threshold has required arguments
    assert builtin <= set(SUPPORTED_ACTIVATIONS)


def test_save_and_load_round_trip(tmp_path) -> None:
    keras.utils.set_random_seed(12)
    m = keras.Sequential([keras.Input((10, 3)), L.Conv1D(4, 3, activation="relu"), L.LSTM(5), L.Dense(2)])
    model = sofie_root.compile(m)
    path = tmp_path / "keras.root"
    model.save(path, "tagger")
    loaded = sofie_root.load(f"{path}:tagger")
    x = np.random.default_rng(0).standard_normal((4, 10, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))
    check(m, compiled=loaded)


def test_grouped_and_3d_convolutions() -> None:
    keras.utils.set_random_seed(13)
    m = keras.Sequential([keras.Input((10, 10, 4)), L.Conv2D(6, 3, groups=2, activation="relu"),
                          L.Conv2D(4, 1, use_bias=False), L.GlobalAveragePooling2D(keepdims=True), L.Flatten()])
    check(m)
    m = keras.Sequential([keras.Input((6, 6, 6, 2)), L.Conv3D(3, 3, padding="same", strides=2), L.Flatten(),
                          L.Dense(2)])
    check(m)
