"""TorchScript modules with data-dependent loops and lists of tensors (in a file:
``torch.jit.script`` reads their source)."""

from __future__ import annotations

import torch


class ForLoop(torch.nn.Module):
    """A recurrence run ``n`` times, ``n`` an input."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        h = x
        for _ in range(int(n)):
            h = torch.tanh(self.lin(h)) + x
        return h


class WhileLoop(torch.nn.Module):
    """Iterate until the state is small or 20 steps were taken (an ``and`` of two conditions)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        k = torch.zeros(1)
        while bool(h.abs().sum() > 0.5) and bool(k < 20):
            h = 0.7 * torch.tanh(self.lin(h))
            k = k + 1
        return h, k


class ListOfTensors(torch.nn.Module):
    """A Python list of tensors: split, indexed, appended to, concatenated, stacked, counted."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        parts = torch.split(x, 2, dim=1)
        ys = [torch.relu(parts[0]), parts[1] * 2.0]
        ys.append(parts[-1] + 1.0)
        return torch.cat(ys, dim=1), torch.stack([ys[0], ys[2]], dim=0), len(ys)


class AppendInLoop(torch.nn.Module):
    """A list appended to in a loop of ``n`` steps (``n`` an input), then stacked, concatenated,
    counted and indexed."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
        h = x
        outs: list[torch.Tensor] = []
        for _ in range(n):
            h = torch.tanh(self.lin(h))
            outs.append(h)
        return torch.stack(outs, 1), torch.cat(outs, 1), len(outs), outs[-1]
