"""Slices whose bounds are computed at run time but whose extent is fixed.

A Loop body that slices at the iteration number (``Slice(x, i, i + 1)``) has starts and ends
known only at run time, yet the difference ``ends - starts`` is a constant, so the output has a
fixed shape whenever the bounds lie inside the input. This module finds such differences: it
follows each bound back through the integer operators that keep the elements' identity
(Unsqueeze, Squeeze, Reshape, Flatten, Identity, integer Cast) and the additions or
subtractions of constants, to a common run-time tensor. The frontend then compiles the node as
``sofie.SliceFixed`` (``ops/movement.py``), which computes the ONNX bounds at run time and throws
if they give another extent than the one found here (a bound outside the input): the analysis
only decides the output shape, never a value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..ir.graph import Node

#: operators whose output holds their first input's elements in the same order
_SAME_ELEMENTS = frozenset({"Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Cast"})
#: longest bound vector followed (a Slice has one bound per sliced axis)
_MAX_LEN = 64


@dataclass(frozen=True)
class _Affine:
    """Element k is ``base[index[k]] + offset[k]`` (``base`` None: ``offset`` is the value)."""

    base: str | None
    index: tuple[int, ...]
    offset: tuple[int, ...]


def _shift(var: _Affine, cst: _Affine, sign: int, n: int) -> _Affine | None:
    """``var + sign * cst`` with ONNX broadcasting of one-element operands, as n elements."""
    if len(var.offset) == len(cst.offset) == n:
        return _Affine(var.base, var.index, tuple(o + sign * k for o, k in zip(var.offset, cst.offset)))
    if len(var.offset) == 1 and len(cst.offset) == n:
        return _Affine(var.base, var.index * n, tuple(var.offset[0] + sign * k for k in cst.offset))
    if len(cst.offset) == 1 and len(var.offset) == n:
        return _Affine(var.base, var.index, tuple(o + sign * cst.offset[0] for o in var.offset))
    return None


def _affine(name: str, producers: Mapping[str, Node], const: Callable[[str], np.ndarray | None],
            size: Callable[[str], int | None], depth: int = 0) -> _Affine | None:
    c = const(name)
    if c is not None:
        if c.dtype.kind not in "iu" or c.size > _MAX_LEN:
            return None
        vals = tuple(int(x) for x in c.reshape(-1))
        return _Affine(None, tuple(range(len(vals))), vals)
    n = size(name)
    if n is None or n > _MAX_LEN:
        return None
    node = producers.get(name)
    if node is None or depth > 32 or node.domain not in ("", "ai.onnx"):
        return _Affine(name, tuple(range(n)), (0,) * n)
    ins = node.inputs
    if node.op_type in _SAME_ELEMENTS and ins and ins[0]:
        inner = _affine(ins[0], producers, const, size, depth + 1)
        if inner is not None and len(inner.offset) == n:
            return inner
    elif node.op_type in ("Add", "Sub") and len(ins) == 2 and all(ins):
        a = _affine(ins[0], producers, const, size, depth + 1)
        b = _affine(ins[1], producers, const, size, depth + 1)
        shifted = None
        if a is not None and b is not None and a.base is not None and b.base is None:
            shifted = _shift(a, b, -1 if node.op_type == "Sub" else 1, n)
        elif a is not None and b is not None and a.base is None and b.base is not None and node.op_type == "Add":
            shifted = _shift(b, a, 1, n)  # (constant - value would change the value's sign)
        if shifted is not None:
            return shifted
    return _Affine(name, tuple(range(n)), (0,) * n)


def fixed_differences(starts: str, ends: str, producers: Mapping[str, Node],
                      const: Callable[[str], np.ndarray | None], size: Callable[[str], int | None],
                      local: Callable[[str], bool]) -> tuple[int, ...] | None:
    """``ends - starts`` element by element when it is a constant although neither is known at
    compile time (both computed from the same run-time tensor, which ``local`` accepts), else None.
    """
    s = _affine(starts, producers, const, size)
    e = _affine(ends, producers, const, size)
    if s is None or e is None or s.base is None or s.base != e.base or s.index != e.index:
        return None
    if not local(s.base):
        return None
    return tuple(b - a for a, b in zip(s.offset, e.offset))


def fixed_extents(diffs: tuple[int, ...], steps: tuple[int, ...]) -> tuple[int, ...]:
    """The number of elements a slice takes along each axis when its bounds are in range."""
    out = []
    for d, st in zip(diffs, steps):
        out.append(max(0, -((-d) // st)) if st > 0 else max(0, -(d // -st)))
    return tuple(out)
