"""PyTorch importer: nn.Modules and TorchScript files, through torch.onnx.export, agree with torch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import sofie_root

torch = pytest.importorskip("torch")
nn = torch.nn

RTOL, ATOL = 1e-4, 1e-5


def _check(model: sofie_root.Model, module, shapes, batches=(1, 17), seed=0, dtypes=None) -> float:
    """Run both at each batch size; returns the largest absolute difference seen."""
    worst = 0.0
    gen = torch.Generator().manual_seed(seed)
    for b in batches:
        xs = []
        for k, s in enumerate(shapes):
            if dtypes and dtypes[k] != "float32":
                xs.append(torch.randint(0, 5, (b, *s), generator=gen))
            else:
                xs.append(torch.randn(b, *s, generator=gen))
        with torch.no_grad():
            ref = module(*xs)
        refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        got = model.infer(*[x.numpy() for x in xs])
        assert len(got) == len(refs)
        for g, r in zip(got, refs):
            r = r.numpy()
            assert g.shape == r.shape
            np.testing.assert_allclose(g, r, rtol=RTOL, atol=ATOL)
            worst = max(worst, float(np.abs(g - r).max()))
    return worst


class EdgeConv(nn.Module):
    """ParticleNet-style EdgeConv block: k nearest neighbours (TopK on distances) and Gather."""

    def __init__(self, k: int = 4, c: int = 4, h: int = 16):
        super().__init__()
        self.k = k
        self.mlp = nn.Sequential(nn.Linear(2 * c, h), nn.ReLU(),
                                 nn.Linear(h, h), nn.ReLU())
        self.out = nn.Linear(h, 2)

    def forward(self, pts, feats):
        d = ((pts.unsqueeze(2) - pts.unsqueeze(1)) ** 2).sum(-1)           # B, P, P
        _, idx = torch.topk(-d, self.k + 1, dim=-1)
        idx = idx[:, :, 1:]                                                # drop the point itself
        b, p, c = feats.shape
        nb = torch.gather(feats.unsqueeze(1).expand(b, p, p, c), 2, idx.unsqueeze(-1).expand(b, p, self.k, c))
        ctr = feats.unsqueeze(2).expand(b, p, self.k, c)
        e = self.mlp(torch.cat([ctr, nb - ctr], -1)).mean(2)
        return torch.softmax(self.out(e.mean(1)), -1)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.layer(x).mean(1))


def test_mlp_dynamo_keeps_a_symbolic_batch() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(7, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 16), nn.Tanh(),
                      nn.Linear(16, 1), nn.Sigmoid())
    model = sofie_root.compile(m.eval(), example_inputs=(torch.randn(1, 7),), exporter="dynamo")
    assert model.inputs[0].shape == ("N", 7) and model.outputs[0].shape == ("N", 1)
    _check(model, m, [(7,)], batches=(1, 64))


def test_training_module_is_exported_in_eval_mode_and_restored() -> None:
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    m.train()
    m(torch.randn(32, 5))  # update the running statistics
    model = sofie_root.compile(m, example_inputs=(torch.randn(4, 5),), exporter="torchscript")
    assert m.training
    m.eval()
    _check(model, m, [(5,)])


def test_cnn_conv_batchnorm_pool() -> None:
    torch.manual_seed(2)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(4, 6, 3), nn.ELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    m.eval()
    model = sofie_root.compile(m, example_inputs=(torch.randn(2, 1, 10, 10),))
    _check(model, m, [(1, 10, 10)])


def test_conv1d_lstm_jet_tagger() -> None:
    torch.manual_seed(3)

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(6, 8, 3, padding=1)
            self.lstm = nn.LSTM(8, 12, batch_first=True)
            self.gru = nn.GRU(12, 6, batch_first=True, bidirectional=True)
            self.head = nn.Linear(12, 1)

        def forward(self, x):  # x: B, C, T
            h = torch.relu(self.conv(x)).transpose(1, 2)
            h, _ = self.lstm(h)
            h, _ = self.gru(h)
            return torch.sigmoid(self.head(h[:, -1]))

    m = Tagger().eval()
    model = sofie_root.compile(m, example_inputs=(torch.randn(2, 6, 9),), exporter="torchscript")
    _check(model, m, [(6, 9)])


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_particlenet_edgeconv(exporter) -> None:
    torch.manual_seed(4)
    m = EdgeConv().eval()
    model = sofie_root.compile(m, example_inputs=(torch.randn(3, 10, 2), torch.randn(3, 10, 4)), exporter=exporter,
                               input_names=["points", "features"])
    assert [i.name for i in model.inputs] == ["points", "features"]
    # torch's Expand pattern Where(Equal(shape, -1), 1, shape) folds: no specialisation on input values
    assert type(model) is sofie_root.Model
    assert model.inputs[0].shape == ("N", 10, 2)
    _check(model, m, [(10, 2), (10, 4)])


def test_edgeconv_with_a_variable_number_of_particles() -> None:
    torch.manual_seed(5)
    m = EdgeConv().eval()
    model = sofie_root.compile(m, example_inputs=(torch.randn(2, 10, 2), torch.randn(2, 10, 4)),
                               dynamic_dims={0: {1: "P"}, 1: {1: "P"}}, exporter="torchscript")
    assert model.inputs[0].shape == ("N", "P", 2)
    _check(model, m, [(7, 2), (7, 4)], batches=(1, 3))
    _check(model, m, [(13, 2), (13, 4)], batches=(2,))


def test_transformer_encoder_block() -> None:
    torch.manual_seed(6)
    m = Encoder().eval()
    model = sofie_root.compile(m, example_inputs=(torch.randn(2, 6, 16),))
    _check(model, m, [(6, 16)])


def test_several_outputs_and_integer_inputs() -> None:
    torch.manual_seed(7)

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 4)
            self.lin = nn.Linear(4, 2)

        def forward(self, ids, x):
            h = self.emb(ids).sum(1) + x
            return self.lin(h), torch.relu(h)

    m = Two().eval()
    model = sofie_root.compile(m, example_inputs=(torch.randint(0, 5, (2, 3)), torch.randn(2, 4)),
                               output_names=["logits", "hidden"], exporter="torchscript")
    assert [o.name for o in model.outputs] == ["logits", "hidden"]
    _check(model, m, [(3,), (4,)], dtypes=["int64", "float32"])


def test_torchscript_file_with_input_shapes(tmp_path) -> None:
    torch.manual_seed(8)
    m = nn.Sequential(nn.Linear(4, 8), nn.SELU(), nn.Linear(8, 2), nn.Softmax(-1)).eval()
    path = tmp_path / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still what users have
        torch.jit.save(torch.jit.trace(m, torch.randn(3, 4)), str(path))
    model = sofie_root.compile(str(path), input_shapes=[("N", 4)])
    assert model.inputs[0].shape == ("N", 4)
    _check(model, m, [(4,)])
    model = sofie_root.compile(path, input_shapes={"jets": (None, 4)})
    assert model.inputs[0].name == "jets"


def test_errors_say_what_to_do(tmp_path) -> None:
    class NoOnnx(nn.Module):
        def forward(self, x):
            return torch.kthvalue(x, 2)[0]  # no ONNX translation in either exporter

    with pytest.raises(sofie_root.ExportError, match=r"(?s)dynamo exporter.*torchscript exporter.*kthvalue.*What to try"):
        sofie_root.compile(NoOnnx(), example_inputs=(torch.randn(2, 3),))

    class DataDependent(nn.Module):
        def forward(self, x):
            return x[x > 0].sum().reshape(1)  # a boolean mask: NonZero with a data-dependent size

    m = sofie_root.compile(DataDependent(), example_inputs=(torch.randn(2, 3),), exporter="dynamo")
    x = torch.randn(4, 3)
    np.testing.assert_allclose(m(x.numpy()), DataDependent()(x).numpy(), rtol=RTOL, atol=ATOL)
    with pytest.raises(sofie_root.ExportError, match="example_inputs"):
        sofie_root.compile(nn.Linear(2, 2))
    with pytest.raises(sofie_root.ExportError, match="fails on the example inputs"):
        sofie_root.compile(nn.Linear(2, 2), example_inputs=(torch.randn(1, 3),))
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(sofie_root.ExportError, match="TorchScript"):
        sofie_root.compile(bad, input_shapes=[(1, 2)])
    with pytest.raises(sofie_root.ExportError, match="exporter="):
        sofie_root.compile(nn.Linear(2, 2), example_inputs=(torch.randn(1, 2),), exporter="magic")
    with pytest.raises(sofie_root.SofieError, match="example_inputs"):
        sofie_root.compile(b"\x00", example_inputs=(1,))


def test_save_and_load_round_trip(tmp_path) -> None:
    torch.manual_seed(10)
    m = EdgeConv().eval()
    model = sofie_root.compile(m, example_inputs=(torch.randn(2, 10, 2), torch.randn(2, 10, 4)),
                               exporter="torchscript")
    path = tmp_path / "edgeconv.root"
    model.save(path, "edgeconv")
    loaded = sofie_root.load(path)
    assert loaded.inputs[0].shape == ("N", 10, 2)
    xs = [torch.randn(5, 10, 2).numpy(), torch.randn(5, 10, 4).numpy()]
    np.testing.assert_array_equal(loaded(*xs), model(*xs))
    _check(loaded, m, [(10, 2), (10, 4)])
