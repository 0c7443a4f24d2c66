"""LSTM, GRU and RNN against onnxruntime (and torch.nn for exported torch modules)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from onnx import helper, numpy_helper

import sofie_root
from sofie_root.errors import UnsupportedOperatorError

from .ort_check import assert_matches_ort, make_model, run_ort, value_info

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
TOL = {"rtol": 1e-4, "atol": 1e-5}


def build(op, direction="forward", seq=5, batch=3, isz=4, hidden=6, bias=True, init=True, seq_lens=False,
          peep=False, layout=0, dtype=np.float32, batch_dim=None, seed=0, outputs=None, **attrs):
    """An ONNX model with one recurrent node, and random inputs for it.

    ``batch_dim`` (a name) makes the batch dimension symbolic in the model's inputs.
    """
    rng = np.random.default_rng(seed)
    g = GATES[op]
    nd = 2 if direction == "bidirectional" else 1
    inits = {"W": (rng.standard_normal((nd, g * hidden, isz)) * 0.5).astype(dtype),
             "R": (rng.standard_normal((nd, g * hidden, hidden)) * 0.5).astype(dtype)}
    ins = ["X", "W", "R"]
    bsym = batch_dim or batch
    xs = (seq, batch, isz) if layout == 0 else (batch, seq, isz)
    xsym = (seq, bsym, isz) if layout == 0 else (bsym, seq, isz)
    vis = [value_info("X", dtype, xsym)]
    feeds = [rng.standard_normal(xs).astype(dtype)]
    if bias:
        inits["B"] = rng.standard_normal((nd, 2 * g * hidden)).astype(dtype)
    ins.append("B" if bias else "")
    if seq_lens:
        vis.append(value_info("sl", np.int32, (bsym,)))
        lens = rng.integers(1, seq + 1, batch).astype(np.int32)
        lens[0] = seq
        feeds.append(lens)
    ins.append("sl" if seq_lens else "")
    st = (nd, batch, hidden) if layout == 0 else (batch, nd, hidden)
    st_sym = (nd, bsym, hidden) if layout == 0 else (bsym, nd, hidden)
    for name in (["h0", "c0"] if op == "LSTM" else ["h0"]):
        if init:
            vis.append(value_info(name, dtype, st_sym))
            feeds.append(rng.standard_normal(st).astype(dtype))
        ins.append(name if init else "")
    if peep:
        inits["P"] = rng.standard_normal((nd, 3 * hidden)).astype(dtype)
        ins.append("P")
    while ins[-1] == "":
        ins.pop()
    outs = outputs or (["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"])
    if layout:
        attrs["layout"] = layout
    node = helper.make_node(op, ins, outs, hidden_size=hidden, direction=direction, **attrs)
    model = make_model([node], vis, [value_info(o, dtype, None) for o in outs if o], inits, opset=14)
    return model, feeds


def _new_feeds(model_feeds, batch, seed, layout=0):
    """Fresh inputs of the same kinds for another batch size."""
    rng = np.random.default_rng(seed)
    out = []
    for f in model_feeds:
        shape = list(f.shape)
        if f.dtype == np.int32:
            out.append(rng.integers(1, 6, batch).astype(np.int32))
            continue
        if f.ndim == 3:
            shape[1 if (layout == 0) else 0] = batch
        out.append(rng.standard_normal(shape).astype(f.dtype))
    return out


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("variant", ["full", "bare", "seq_lens"])
def test_directions_and_optional_inputs(op, direction, variant):
    kw = {"full": {}, "bare": {"bias": False, "init": False}, "seq_lens": {"seq_lens": True}}[variant]
    model, feeds = build(op, direction, **kw)
    assert_matches_ort(model, *feeds, **TOL)


@pytest.mark.parametrize("op,kw", [
    ("GRU", {}), ("GRU", {"seq_lens": True, "direction": "bidirectional"}),
    ("GRU", {"linear_before_reset": 1}), ("GRU", {"linear_before_reset": 1, "bias": False, "direction": "reverse"}),
    ("LSTM", {}), ("LSTM", {"peep": True, "seq_lens": True, "direction": "bidirectional"}),
    ("LSTM", {"peep": True, "input_forget": 1, "bias": False, "init": False}),
    # a non-default activation: the scalar loops
    ("GRU", {"activations": ["Sigmoid", "Relu"]}),
])
def test_vector_gate_loops(op, kw):
    """hidden_size a multiple of 8 with the default activations: the 8-lane gate loops."""
    kw = dict(kw)
    model, feeds = build(op, kw.pop("direction", "forward"), hidden=16, batch=5, **kw)
    assert_matches_ort(model, *feeds, **TOL)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_only_some_outputs(op):
    model, feeds = build(op, "bidirectional", seq_lens=True, outputs=["", "Y_h"])
    assert_matches_ort(model, *feeds, **TOL)
    model, feeds = build(op, "forward", outputs=["Y"])
    assert_matches_ort(model, *feeds, **TOL)


def test_lstm_cell_state_only():
    model, feeds = build("LSTM", "reverse", seq_lens=True, outputs=["", "", "Y_c"])
    assert_matches_ort(model, *feeds, **TOL)


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_peepholes(direction):
    model, feeds = build("LSTM", direction, peep=True, seq_lens=True)
    assert_matches_ort(model, *feeds, **TOL)


def test_lstm_input_forget_and_clip():
    model, feeds = build("LSTM", "bidirectional", peep=True, input_forget=1, clip=0.7)
    assert_matches_ort(model, *feeds, **TOL)


@pytest.mark.parametrize("op", ["RNN", "GRU"])
def test_clip(op):
    model, feeds = build(op, "reverse", clip=0.5)
    assert_matches_ort(model, *feeds, **TOL)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_gru_linear_before_reset(direction):
    model, feeds = build("GRU", direction, seq_lens=True, linear_before_reset=1)
    assert_matches_ort(model, *feeds, **TOL)
    model, feeds = build("GRU", direction, bias=False, linear_before_reset=1)
    assert_matches_ort(model, *feeds, **TOL)


@pytest.mark.parametrize("act,alpha,beta", [
    ("Relu", None, None), ("Sigmoid", None, None), ("LeakyRelu", [0.2], None), ("LeakyRelu", None, None),
    ("HardSigmoid", [0.3], [0.4]), ("HardSigmoid", None, None), ("Affine", [0.7], [0.1]),
    ("ThresholdedRelu", [0.1], None), ("ScaledTanh", [0.8], [1.2]), ("Elu", [0.9], None), ("Elu", None, None),
    ("Softsign", None, None), ("Softplus", None, None),
])
def test_rnn_activations(act, alpha, beta):
    attrs = {"activations": [act]}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    model, feeds = build("RNN", "forward", **attrs)
    assert_matches_ort(model, *feeds, **TOL)


def test_gru_lstm_activations_per_direction():
    model, feeds = build("GRU", "bidirectional", activations=["HardSigmoid", "LeakyRelu", "Sigmoid", "Softsign"],
                         activation_alpha=[0.3, 0.2], activation_beta=[0.4])
    assert_matches_ort(model, *feeds, **TOL)
    model, feeds = build("LSTM", "bidirectional",
                         activations=["HardSigmoid", "Elu", "ScaledTanh", "Sigmoid", "Tanh", "Affine"],
                         activation_alpha=[0.3, 0.8, 0.9, 0.5], activation_beta=[0.4, 1.1, 0.2])
    assert_matches_ort(model, *feeds, **TOL)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_layout_1(op, direction):
    """onnxruntime has no batch-major kernels: compare with its layout-0 run on transposed data."""
    model, feeds = build(op, direction, layout=1, seq_lens=True, peep=(op == "LSTM"))
    got = sofie_root.compile(model).infer(*feeds)
    node = model.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "layout"}
    attrs["direction"] = attrs["direction"].decode()
    ref_node = helper.make_node(op, list(node.input), list(node.output), **attrs)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    vis = [value_info(i.name, np.int32 if i.name == "sl" else np.float32, None) for i in model.graph.input]
    ref_model = make_model([ref_node], vis, [value_info(o, np.float32, None) for o in node.output], inits, opset=14)
    ref = run_ort(ref_model, *[f.transpose(1, 0, 2) if f.ndim == 3 else f for f in feeds])
    ref = [ref[0].transpose(2, 0, 1, 3)] + [r.transpose(1, 0, 2) for r in ref[1:]]
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, **TOL)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("layout", [0, 1])
def test_symbolic_batch(op, layout):
    model, feeds = build(op, "bidirectional", batch_dim="N", seq_lens=True, layout=layout)
    m = sofie_root.compile(model)
    if layout == 0:
        assert_matches_ort(model, *feeds, compiled=m, **TOL)
        assert_matches_ort(model, *_new_feeds(feeds, 5, 1), compiled=m, **TOL)
    else:
        a = m.infer(*feeds)
        b = m.infer(*_new_feeds(feeds, 5, 1, layout=1))
        assert a[0].shape == (3, 5, 2, 6) and b[0].shape == (5, 5, 2, 6)
        assert b[1].shape == (5, 2, 6)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_float64(op):
    """onnxruntime has no double recurrent kernels: compare with its float32 run."""
    model, feeds = build(op, "bidirectional", seq_lens=True, dtype=np.float64, peep=(op == "LSTM"))
    got = sofie_root.compile(model).infer(*feeds)
    assert all(g.dtype == np.float64 for g in got)
    model32, feeds32 = build(op, "bidirectional", seq_lens=True, dtype=np.float32, peep=(op == "LSTM"))
    ref = run_ort(model32, *feeds32)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def test_bad_sequence_lens_raise():
    model, feeds = build("GRU", "forward", seq_lens=True)
    m = sofie_root.compile(model)
    feeds[1] = np.array([1, 9, 2], dtype=np.int32)
    with pytest.raises(Exception, match="sequence_lens"):
        m.infer(*feeds)


def test_unsupported_variants():
    model, _ = build("RNN", "forward", activations=["Gelu"])
    with pytest.raises(UnsupportedOperatorError, match="activation"):
        sofie_root.compile(model)
    model, _ = build("LSTM", "bidirectional", activations=["Sigmoid", "Tanh"])
    with pytest.raises(UnsupportedOperatorError, match="activations"):
        sofie_root.compile(model)


# -- torch.nn modules exported to ONNX ---------------------------------------------------------

@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("bidir,batch_first", [(False, False), (False, True), (True, False)])
def test_torch_export(kind, bidir, batch_first):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = getattr(torch.nn, kind)(5, 7, num_layers=1, batch_first=batch_first, bidirectional=bidir).eval()
    nd = 2 if bidir else 1
    names = ["x", "h0", "c0"] if kind == "LSTM" else ["x", "h0"]

    def inputs(batch):
        x = torch.randn(batch, 3, 5) if batch_first else torch.randn(3, batch, 5)
        return [x] + [torch.randn(nd, batch, 7) for _ in names[1:]]

    def call(args):
        with torch.no_grad():
            y, st = net(args[0], tuple(args[1:]) if kind == "LSTM" else args[1])
        return [y] + (list(st) if kind == "LSTM" else [st])

    args = inputs(4)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated (and asked for here)
        torch.onnx.export(net, (args[0], tuple(args[1:]) if kind == "LSTM" else args[1]), f, dynamo=False,
                          input_names=names, output_names=["y", "h", "c"][:len(names)],
                          dynamic_axes={"x": {0 if batch_first else 1: "N"}, **{n: {1: "N"} for n in names[1:]}})
    m = sofie_root.compile(f.getvalue())
    for batch in (4, 2):
        args = inputs(batch)
        got = m.infer(*[a.numpy() for a in args])
        for g, r in zip(got, call(args)):
            np.testing.assert_allclose(g, r.numpy(), **TOL)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_zero_length_sequence(op):
    """A sequence of length 0 has zero outputs and zero final states (as onnxruntime)."""
    model, feeds = build(op, "bidirectional", seq_lens=True)
    feeds[1] = np.array([5, 0, 2], dtype=np.int32)
    assert_matches_ort(model, *feeds, **TOL)


@pytest.mark.parametrize("op", ["GRU", "LSTM"])
def test_symbolic_sequence_and_batch(op):
    model, feeds = build(op, "bidirectional", seq_lens=True, batch_dim="N")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "T"
    m = sofie_root.compile(model)
    assert_matches_ort(model, *feeds, compiled=m, **TOL)
    rng = np.random.default_rng(7)
    other = [rng.standard_normal((7, 2, 4)).astype(np.float32), np.array([7, 3], dtype=np.int32)]
    other += [rng.standard_normal((2, 2, 6)).astype(np.float32) for _ in feeds[2:]]
    assert_matches_ort(model, *other, compiled=m, **TOL)
