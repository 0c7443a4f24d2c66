"""Memory planning: placing intermediate tensors in one aligned arena from their lifetimes.

Sizes may be symbolic. Tensors whose byte size is ``units * M`` for the same monomial ``M`` (``N``,
``N*L`` or the constant 1) form a group; within a group, offsets are planned in units, so a plan
made once holds for every value of the symbols (offsets stay 64-byte aligned because units are
rounded up to 64). Groups are laid out one after another at run time. A tensor whose size is not
a single monomial (``N + 1``) gets a group of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir.dims import Dim, DimLike

ALIGN = 64


@dataclass
class Block:
    name: str
    units: int          # size in units of the group's monomial, rounded up to ALIGN
    start: int          # index of the first step the block is live
    end: int            # index of the last step the block is live
    offset: int = 0     # in units, within the group


@dataclass
class Group:
    scale: DimLike      # bytes per unit (1, or a symbolic monomial)
    blocks: list[Block]
    units: int = 0      # planned size of the group in units


def _split(nbytes: DimLike) -> tuple[DimLike, int]:
    """(scale, units) with nbytes == scale * units, scale a monomial with coefficient 1."""
    if isinstance(nbytes, Dim):
        if len(nbytes.terms) == 1:
            (mono, coef), = nbytes.terms.items()
            return Dim({mono: 1}), coef
        return nbytes, 1
    return 1, int(nbytes)


def _round(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan(requests: list[tuple[str, DimLike, int, int]]) -> list[Group]:
    """Place ``(name, nbytes, first_step, last_step)`` blocks; returns groups with offsets set.

    Greedy best-fit by decreasing size: a block goes into the smallest gap left by blocks whose
    lifetimes overlap its own, or at the end.
    """
    groups: dict[object, Group] = {}
    for name, nbytes, start, end in requests:
        scale, units = _split(nbytes)
        g = groups.setdefault(scale, Group(scale, []))
        g.blocks.append(Block(name, _round(max(units, 1)), start, end))
    for g in groups.values():
        placed: list[Block] = []
        for b in sorted(g.blocks, key=lambda b: (-b.units, b.start, b.name)):
            live = sorted((p for p in placed if p.start <= b.end and b.start <= p.end),
                          key=lambda p: p.offset)
            best, best_gap, cursor = None, None, 0
            for p in live:
                gap = p.offset - cursor
                if gap >= b.units and (best_gap is None or gap < best_gap):
                    best, best_gap = cursor, gap
                cursor = max(cursor, p.offset + p.units)
            b.offset = best if best is not None else cursor
            placed.append(b)
            g.units = max(g.units, b.offset + b.units)
    return sorted(groups.values(), key=lambda g: (isinstance(g.scale, Dim), str(g.scale)))
