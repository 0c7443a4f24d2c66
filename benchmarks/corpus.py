"""The benchmark corpus: fourteen HEP networks, built with torch and exported to ONNX with a
symbolic batch dimension (fixed seeds, so every build gives the same weights).

The five models of :mod:`benchmarks.hep_models` (dense, jet, cnn, particlenet, transformer)
plus nine more, so that speed and correctness are measured on the kinds of networks HEP runs,
not only on our own five. ``make bench`` times them all; ``tests/sofie_root/test_corpus.py``
checks each against onnxruntime and torch. Other parts of the project reuse the corpus:

>>> from benchmarks import corpus                        # doctest: +SKIP
>>> proto, arrays = corpus.MODELS["pixel_cnn"](batch=4)  # an onnx.ModelProto and example inputs
>>> corpus.MODELS["pixel_cnn"].module()                  # the torch module (eval mode)
>>> corpus.export("pixel_cnn", "pixel_cnn.onnx")         # the same, written to a file

Exports are cached on disk (``SOFIE_CORPUS_CACHE``, default ``~/.cache/sofie_root/corpus``),
keyed by the torch version and this file's contents, since the dynamo exporter takes seconds
per model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from benchmarks import hep_models

nn = torch.nn


# -- the networks ----------------------------------------------------------------------------------

class MHATransformer(nn.Module):
    """Constituent transformer with ``nn.MultiheadAttention`` and a key padding mask: 30 particle
    slots x 8 features, zero-padded (a slot whose features are all zero is padding). Linear
    embedding to 32, two post-norm encoder layers (4 heads, ReLU MLP 64), masked mean pooling,
    3-class softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.att = nn.ModuleList(nn.MultiheadAttention(32, 4, batch_first=True) for _ in range(2))
        self.norm1 = nn.ModuleList(nn.LayerNorm(32) for _ in range(2))
        self.norm2 = nn.ModuleList(nn.LayerNorm(32) for _ in range(2))
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32)) for _ in range(2))
        self.head = nn.Linear(32, 3)

    def forward(self, particles):
        pad = (particles.abs().sum(dim=-1) == 0)  # [N, P], True where padding
        x = self.embed(particles)
        for att, n1, n2, mlp in zip(self.att, self.norm1, self.norm2, self.mlp):
            a, _ = att(x, x, x, key_padding_mask=pad, need_weights=False)
            x = n1(x + a)
            x = n2(x + mlp(x))
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
        return torch.softmax(self.head(pooled), dim=-1)


class ParticleTransformer(nn.Module):
    """ParT-like: 32 particles with (eta, phi) and 8 features; pairwise features (ln dR^2, deta,
    dphi) through a 1x1 Conv2d MLP give a per-head interaction bias [N, heads, P, P] added to the
    attention logits of two pre-norm attention layers (4 heads, dim 32, GELU MLP); mean pooling,
    5-class softmax."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Sequential(nn.Linear(8, dim), nn.GELU())
        self.pair = nn.Sequential(nn.Conv2d(3, 16, 1), nn.GELU(), nn.Conv2d(16, heads, 1))
        self.norm1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(2))
        self.proj = nn.ModuleList(nn.Linear(dim, dim) for _ in range(2))
        self.norm2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
                                 for _ in range(2))
        self.head = nn.Linear(dim, 5)

    def forward(self, points, features):
        eta, phi = points[..., 0], points[..., 1]  # [N, P]
        deta = eta.unsqueeze(2) - eta.unsqueeze(1)
        dphi = phi.unsqueeze(2) - phi.unsqueeze(1)
        lndr = torch.log(deta * deta + dphi * dphi + 1e-4)
        bias = self.pair(torch.stack([lndr, deta, dphi], dim=1))  # [N, H, P, P]
        x = self.embed(features)
        b, t, d = x.shape
        for n1, qkv, proj, n2, mlp in zip(self.norm1, self.qkv, self.proj, self.norm2, self.mlp):
            q, k, v = qkv(n1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5 + bias, dim=-1)
            x = x + proj((att @ v).transpose(1, 2).reshape(b, t, d))
            x = x + mlp(n2(x))
        return torch.softmax(self.head(x.mean(dim=1)), dim=-1)


_IN_NODES = 12
_SENDERS, _RECEIVERS = zip(*((i, j) for i in range(_IN_NODES) for j in range(_IN_NODES) if i != j))


class InteractionNetwork(nn.Module):
    """Interaction network (JEDI-net-like) over 12 tracks x 6 features, fully connected (132
    directed edges): an edge MLP on (sender, receiver) features, messages summed into the
    receivers by scatter-add (``index_add``), a node MLP on (features, aggregate), a sum over
    nodes and a sigmoid head."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("senders", torch.tensor(_SENDERS, dtype=torch.int64))
        self.register_buffer("receivers", torch.tensor(_RECEIVERS, dtype=torch.int64))
        self.edge = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
        self.node = nn.Sequential(nn.Linear(6 + 16, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid())

    def forward(self, nodes):
        msg = self.edge(torch.cat([nodes[:, self.senders], nodes[:, self.receivers]], dim=-1))  # [N, E, 16]
        agg = torch.zeros(nodes.shape[0], _IN_NODES, 16, dtype=nodes.dtype).index_add(1, self.receivers, msg)
        h = self.node(torch.cat([nodes, agg], dim=-1))
        return self.head(h.sum(dim=1))


class PixelCNN(nn.Module):
    """Pixel-cluster CNN (MobileNet-style): 1x16x16 charge maps, a 3x3 stem, two depthwise 3x3 +
    pointwise 1x1 blocks with tanh, global average pooling, a 4-value regression (position and
    angle corrections)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.Tanh(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 32, 1), nn.Tanh(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32), nn.Conv2d(32, 32, 1), nn.Tanh(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4))

    def forward(self, x):
        return self.net(x)


class Calo3DCNN(nn.Module):
    """3D calorimeter CNN: 1x12x12x20 (eta x phi x depth) cells, two Conv3d + ReLU + pooling
    stages, an energy regression head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool3d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 3 * 3 * 5, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x):
        return self.head(self.features(x))


class BiGRUTracker(nn.Module):
    """Track tagger: a bidirectional GRU (hidden 32) over 20 hits x 6 features, the two final
    states concatenated, a dense head and a sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(6, 32, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid())

    def forward(self, hits):
        _, h = self.gru(hits)  # h: [2, N, 32]
        return self.head(torch.cat([h[0], h[1]], dim=-1))


class AutoEncoder(nn.Module):
    """Anomaly-detection autoencoder on 64 features (64 -> 32 -> 8 -> 32 -> 64, ReLU), scored
    by the mean squared reconstruction error per event."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8), nn.ReLU(),
                                 nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 64))

    def forward(self, x):
        return ((self.net(x) - x) ** 2).mean(dim=1)


class EnergyFlowNetwork(nn.Module):
    """Deep Sets / energy-flow network: a per-particle MLP Phi on the angles (eta, phi) of 40
    particles, summed weighted by the energy fractions z (``einsum("np,npl->nl")``), then an MLP
    F and a 2-class softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
        self.f = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, z, angles):
        return torch.softmax(self.f(torch.einsum("np,npl->nl", z, self.phi(angles))), dim=-1)


class RegressionMLP(nn.Module):
    """Energy-regression MLP: 20 features -> 64 ELU -> 64 SELU -> 32 Softplus -> 1."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ELU(), nn.Linear(64, 64), nn.SELU(),
                                 nn.Linear(64, 32), nn.Softplus(), nn.Linear(32, 1))

    def forward(self, x):
        return self.net(x)


# -- inputs ----------------------------------------------------------------------------------------

def _normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _padded(rng: np.random.Generator, batch: int, slots: int, features: int) -> np.ndarray:
    """Particle lists of 1..slots real particles per event, the rest zero (padding)."""
    x = _normal(rng, batch, slots, features)
    n = rng.integers(1, slots + 1, size=batch)
    x[np.arange(slots)[None, :] >= n[:, None]] = 0.0
    return x


def _energy_fractions(rng: np.random.Generator, batch: int, particles: int) -> np.ndarray:
    z = rng.exponential(size=(batch, particles)).astype(np.float32)
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


# -- the corpus ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CorpusModel:
    """One corpus network. Call it for ``(onnx.ModelProto, example inputs)`` at a batch size."""

    name: str
    factory: Callable[[], nn.Module]
    make_inputs: Callable[[int, np.random.Generator], tuple[np.ndarray, ...]]
    #: what it stands for (one line, for tables and docs)
    summary: str

    def module(self, seed: int = 0) -> nn.Module:
        """The torch module in eval mode with deterministic weights (BatchNorm statistics randomised)."""
        torch.manual_seed(seed)
        m = self.factory().eval()
        hep_models._randomise_batchnorm(m)
        return m

    def inputs(self, batch: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, ...]:
        """Example inputs for ``batch`` events (float32)."""
        return self.make_inputs(batch, rng if rng is not None else np.random.default_rng(batch))

    def __call__(self, batch: int = 2, seed: int = 0) -> tuple[onnx.ModelProto, tuple[np.ndarray, ...]]:
        path = _cached_export(self.name, seed)
        return onnx.load(str(path)), self.inputs(batch)


def _hep(name: str) -> tuple[Callable[[], nn.Module], Callable[[int, np.random.Generator], tuple]]:
    return hep_models.MODELS[name], (lambda batch, rng: hep_models.inputs(name, batch, rng))


_ENTRIES = [
    ("dense", *_hep("dense"), "Higgs-style dense classifier 7 -> 3x300 -> 1, sigmoid"),
    ("regression", RegressionMLP, lambda b, r: (_normal(r, b, 20),), RegressionMLP.__doc__),
    ("autoencoder", AutoEncoder, lambda b, r: (_normal(r, b, 64),), AutoEncoder.__doc__),
    ("deepsets", EnergyFlowNetwork, lambda b, r: (_energy_fractions(r, b, 40), _normal(r, b, 40, 2)),
     EnergyFlowNetwork.__doc__),
    ("jet", *_hep("jet"), "DeepJet-style Conv1D stack + LSTM over 25 particles + dense head"),
    ("bigru", BiGRUTracker, lambda b, r: (_normal(r, b, 20, 6),), BiGRUTracker.__doc__),
    ("cnn", *_hep("cnn"), "2D calorimeter CNN on 1x32x32 images, Conv + BatchNorm + pooling"),
    ("calo3d", Calo3DCNN, lambda b, r: (_normal(r, b, 1, 12, 12, 20),), Calo3DCNN.__doc__),
    ("pixel_cnn", PixelCNN, lambda b, r: (_normal(r, b, 1, 16, 16),), PixelCNN.__doc__),
    ("interaction_net", InteractionNetwork, lambda b, r: (_normal(r, b, _IN_NODES, 6),),
     InteractionNetwork.__doc__),
    ("particlenet", *_hep("particlenet"), "ParticleNet-style EdgeConv tagger, 100 particles, k = 16"),
    ("transformer", *_hep("transformer"), "pre-norm transformer encoder over 50 particles, class token"),
    ("mha_transformer", MHATransformer, lambda b, r: (_padded(r, b, 30, 8),), MHATransformer.__doc__),
    ("part", ParticleTransformer, lambda b, r: (_normal(r, b, 32, 2), _normal(r, b, 32, 8)),
     ParticleTransformer.__doc__),
]

#: name -> :class:`CorpusModel`; ``MODELS[name](batch)`` gives ``(onnx.ModelProto, inputs)``
MODELS: dict[str, CorpusModel] = {
    name: CorpusModel(name, factory, make, " ".join(summary.split()).split(": ")[0].split(". ")[0])
    for name, factory, make, summary in _ENTRIES}

#: the nine models added to the five of hep_models (those have their own end-to-end tests)
NEW = tuple(n for n in MODELS if n not in hep_models.MODELS)


def export(name: str, path: str | os.PathLike, seed: int = 0) -> nn.Module:
    """Export corpus model ``name`` to ``path`` (dynamo exporter, symbolic batch ``N``); returns
    the torch module it was exported from."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    entry = MODELS[name]
    module = entry.module(seed)
    example = tuple(torch.from_numpy(a) for a in entry.inputs(2, np.random.default_rng(0)))
    batch = torch.export.Dim("N")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation and tracing chatter
        torch.onnx.export(module, example, str(path), dynamo=True, verbose=False,
                          dynamic_shapes=tuple({0: batch} for _ in example))
    return module


def _cache_dir() -> Path:
    return Path(os.environ.get("SOFIE_CORPUS_CACHE", Path.home() / ".cache" / "sofie_root" / "corpus"))


def _cached_export(name: str, seed: int = 0) -> Path:
    """The exported file of ``name``, from the cache when the torch version and the sources of
    the corpus (this file and hep_models.py) are the ones it was made with."""
    key = hashlib.sha256(torch.__version__.encode() + onnx.__version__.encode() + str(seed).encode()
                         + Path(__file__).read_bytes() + Path(hep_models.__file__).read_bytes()).hexdigest()[:16]
    path = _cache_dir() / f"{name}-{key}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as d:
            # the exporter puts larger weights into a side file: load them back and store one
            # self-contained file, which can be copied or read as bytes
            export(name, Path(d) / f"{name}.onnx", seed)
            proto = onnx.load(str(Path(d) / f"{name}.onnx"))
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)  # atomic: concurrent builders never see half a file
        for old in path.parent.glob(f"{name}-*.onnx"):  # exports of older sources
            if old != path:
                old.unlink(missing_ok=True)
    return path


def onnx_path(name: str, seed: int = 0) -> Path:
    """Path of the exported ONNX file of ``name`` (exported on first use, then cached)."""
    return _cached_export(name, seed)
