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


MODELS = {"dense": DenseClassifier, "jet": JetTagger, "cnn": CaloCNN}


def inputs(name: str, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Random inputs of the right shapes for model ``name``."""
    if name == "dense":
        return (rng.standard_normal((batch, 7)).astype(np.float32),)
    if name == "jet":
        return (rng.standard_normal((batch, 25, 16)).astype(np.float32),
                rng.standard_normal((batch, 6)).astype(np.float32))
    return (rng.standard_normal((batch, 1, 32, 32)).astype(np.float32),)


def _randomise_batchnorm(module: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
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
