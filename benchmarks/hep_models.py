"""Typical HEP networks, built with torch and exported to ONNX with a symbolic batch dimension.

Used by the end-to-end tests and by the benchmarks, so both measure the same models.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch


class DenseClassifier(torch.nn.Module):
    """Higgs-style: 7 kinematic features -> 3 x 300 -> 1."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(7, 300), torch.nn.ReLU(), torch.nn.Linear(300, 300), torch.nn.ReLU(),
            torch.nn.Linear(300, 300), torch.nn.ReLU(), torch.nn.Linear(300, 1), torch.nn.Sigmoid())

    def forward(self, x):
        return self.net(x)


class JetTagger(torch.nn.Module):
    """DeepJet-style: per-particle Conv1D stack, an LSTM over 25 particles, dense head, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Sequential(
            torch.nn.Conv1d(16, 32, 1), torch.nn.ReLU(), torch.nn.Conv1d(32, 16, 1), torch.nn.ReLU())
        self.lstm = torch.nn.LSTM(16, 32, batch_first=True)
        self.head = torch.nn.Sequential(torch.nn.Linear(32 + 6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))

    def forward(self, particles, jet):
        h = self.conv(particles.transpose(1, 2)).transpose(1, 2)
        _, (hn, _) = self.lstm(h)
        z = torch.cat([hn[-1], jet], dim=1)
        return torch.softmax(self.head(z), dim=1)


class CaloCNN(torch.nn.Module):
    """A small 2D CNN on 1x32x32 calorimeter images with BatchNorm and pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.AvgPool2d(2))
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 8 * 8, 32), torch.nn.ReLU(),
                                        torch.nn.Linear(32, 2))

    def forward(self, x):
        return self.head(self.features(x))


class EdgeConvBlock(torch.nn.Module):
    """One EdgeConv block: k-NN in ``points`` space (pairwise distances + TopK), neighbour features
    by Gather, a shared MLP (1x1 Conv2d + BatchNorm + ReLU) on (x_i, x_j - x_i) edges, mean over
    the k neighbours, and a 1x1 Conv1d + BatchNorm shortcut."""

    def __init__(self, k: int, c_in: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.k = k
        layers, c = [], 2 * c_in
        for c_out in channels:
            layers += [torch.nn.Conv2d(c, c_out, 1, bias=False), torch.nn.BatchNorm2d(c_out), torch.nn.ReLU()]
            c = c_out
        self.mlp = torch.nn.Sequential(*layers)
        self.shortcut = torch.nn.Sequential(torch.nn.Conv1d(c_in, c, 1, bias=False), torch.nn.BatchNorm1d(c))

    def forward(self, points, features):
        batch, c, p = features.shape
        # squared distances up to a per-row constant: -2 x_i.x_j + |x_j|^2 (the |x_i|^2 term does not change the ranking)
        inner = torch.matmul(points.transpose(1, 2), points)
        sq = (points * points).sum(dim=1, keepdim=True)
        neg_dist = 2 * inner - sq - sq.transpose(1, 2)
        idx = neg_dist.topk(self.k + 1, dim=-1)[1][:, :, 1:]  # [B, P, k]; the nearest one is the particle itself
        offset = torch.arange(batch).view(-1, 1, 1) * p
        flat = features.transpose(1, 2).reshape(batch * p, c)
        nbrs = flat.index_select(0, (idx + offset).reshape(-1)).view(batch, p, self.k, c).permute(0, 3, 1, 2)  # [B, C, P, k]
        centre = features.unsqueeze(-1).expand(-1, -1, -1, self.k)
        edges = torch.cat([centre, nbrs - centre], dim=1)
        return torch.relu(self.mlp(edges).mean(dim=-1) + self.shortcut(features))


class ParticleNetTagger(torch.nn.Module):
    """ParticleNet-style: 100 particles with 2 coordinates (eta, phi) and 8 features; two EdgeConv
    blocks with k = 16 (the second in the feature space of the first), global average pooling,
    dense head, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(8)
        self.block1 = EdgeConvBlock(16, 8, (32, 32, 32))
        self.block2 = EdgeConvBlock(16, 32, (64, 64, 64))
        self.head = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 2))

    def forward(self, points, features):
        x = self.block1(points, self.bn(features))
        x = self.block2(x, x)
        return torch.softmax(self.head(x.mean(dim=-1)), dim=1)


class EncoderLayer(torch.nn.Module):
    """Pre-norm transformer encoder layer: multi-head self-attention and a GELU MLP, written out
    (torch.nn.TransformerEncoderLayer's fused inference path is not what a model file contains)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, dim))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class TransformerTagger(torch.nn.Module):
    """Transformer-encoder tagger (ParT-like without pair features): 50 particles x 16 features,
    Linear embedding to 64, a learned class token, 3 encoder layers (4 heads, MLP 128 with GELU),
    LayerNorm, head on the class token, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(16, 64)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 64) * 0.1)
        self.layers = torch.nn.Sequential(*(EncoderLayer(64, 4, 128) for _ in range(3)))
        self.norm = torch.nn.LayerNorm(64)
        self.head = torch.nn.Linear(64, 5)

    def forward(self, particles):
        x = self.embed(particles)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(self.layers(x))
        return torch.softmax(self.head(x[:, 0]), dim=1)


MODELS = {"dense": DenseClassifier, "jet": JetTagger, "cnn": CaloCNN, "particlenet": ParticleNetTagger,
          "transformer": TransformerTagger}


def inputs(name: str, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Random inputs of the right shapes for model ``name``."""
    if name == "dense":
        return (rng.standard_normal((batch, 7)).astype(np.float32),)
    if name == "jet":
        return (rng.standard_normal((batch, 25, 16)).astype(np.float32),
                rng.standard_normal((batch, 6)).astype(np.float32))
    if name == "cnn":
        return (rng.standard_normal((batch, 1, 32, 32)).astype(np.float32),)
    if name == "particlenet":
        return (rng.standard_normal((batch, 2, 100)).astype(np.float32),
                rng.standard_normal((batch, 8, 100)).astype(np.float32))
    if name == "transformer":
        return (rng.standard_normal((batch, 50, 16)).astype(np.float32),)
    raise KeyError(f"unknown benchmark model {name!r}; known: {sorted(MODELS)}")


def _randomise_batchnorm(module: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    for m in module.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def build(name: str, seed: int = 0) -> torch.nn.Module:
    """The torch module ``name`` in eval mode, with deterministic random weights."""
    torch.manual_seed(seed)
    module = MODELS[name]().eval()
    _randomise_batchnorm(module)
    return module


def export(name: str, path: Path, module: torch.nn.Module | None = None) -> torch.nn.Module:
    """Export model ``name`` to ``path`` (dynamo exporter, symbolic batch ``N``); returns the module."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    module = module if module is not None else build(name)
    example = tuple(torch.from_numpy(a) for a in inputs(name, 2, np.random.default_rng(0)))
    batch = torch.export.Dim("N")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation and tracing chatter
        torch.onnx.export(module, example, str(path), dynamo=True, verbose=False,
                          dynamic_shapes=tuple({0: batch} for _ in example))
    return module
