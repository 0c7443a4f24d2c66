"""Memory planning: placing intermediate tensors in one aligned arena from their lifetimes.

The emitter asks for one :class:`Request` per intermediate tensor and per workspace: its byte
size (an int, or a polynomial in the input symbols such as ``1200*N``), the first and the last
step (node index) at which it is live, and optionally the earlier tensor whose bytes it takes over
(an in-place element-wise op: the output overwrites an input whose last read is that node). Such
chains become one :class:`Buffer`.

Sizes are symbolic and one plan must hold for every value of the symbols, so the plan fixes an
order, not numbers: for every two buffers live at the same time, which one lies below the other
(a DAG). The generated code then computes each buffer's offset at run time, from the symbol
values of the call, as the largest end (offset + size, sizes rounded up to 64 bytes) of the
buffers directly below it; the arena is the largest end. Disjointness of live buffers (and 64-byte
alignment) thus holds for every batch size by construction, and a 64-byte constant workspace can
sit below a ``1200*N`` tensor at one batch size and above it at another (``max(64, 1216*N)``).

The order is chosen greedily: buffers are inserted one by one, each between the buffers already
placed that it overlaps in time (below a down-closed subset, above the rest), at the position
that keeps the arena smallest at a small and a large batch (relative to the liveness lower bound
at each), the tightest gap first. Several insertion orders are tried (by size, by start, by
lifetime length, by size x lifetime) and the best plan is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..ir.dims import Dim, DimLike

ALIGN = 64

# symbol values at which candidate placements are compared (every symbol set to each value)
REFERENCE_VALUES = (1, 256)


@dataclass
class Request:
    name: str
    nbytes: DimLike
    start: int                  # first step at which the tensor is live (written)
    end: int                    # last step at which it is live (read)
    alias: str | None = None    # an earlier request whose bytes this one takes over, in place


@dataclass
class Buffer:
    """One block of the arena: a tensor, or a chain of tensors computed in place."""

    names: list[str]
    sizes: list[DimLike]        # byte sizes of the tensors sharing it (the block is the largest)
    start: int
    end: int
    below: list[int] = field(default_factory=list)  # buffers directly below (indices)


def _round(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _value(d: DimLike, values: Mapping[str, int]) -> int:
    return d.evaluate(values) if isinstance(d, Dim) else int(d)


@dataclass
class Plan:
    """The arena layout: buffers in an order valid for every symbol value (``below`` edges),
    evaluated exactly like the generated C++ does (:meth:`layout`)."""

    buffers: list[Buffer]
    requests: dict[str, Request]
    buffer_of: dict[str, int] = field(default_factory=dict)   # tensor name -> buffer index
    order: list[int] = field(default_factory=list)            # topological: every buffer after those below it

    @property
    def symbols(self) -> set[str]:
        return {s for r in self.requests.values() if isinstance(r.nbytes, Dim) for s in r.nbytes.symbols}

    def _check_values(self, values: Mapping[str, int]) -> None:
        missing = sorted(self.symbols - set(values))
        if missing:
            raise ValueError(f"memory plan: values needed for the symbols {missing}")

    def buffer_size(self, k: int, values: Mapping[str, int]) -> int:
        """Bytes of buffer ``k`` (64-byte multiple; at least 64 so every tensor has an address)."""
        return max(ALIGN, _round(max(max(0, _value(s, values)) for s in self.buffers[k].sizes)))

    def layout(self, values: Mapping[str, int]) -> tuple[list[int], int]:
        """(offset of every buffer, arena bytes) for the given symbol values."""
        self._check_values(values)
        size = [self.buffer_size(k, values) for k in range(len(self.buffers))]
        off = [0] * len(self.buffers)
        for k in self.order:
            off[k] = max((off[j] + size[j] for j in self.buffers[k].below), default=0)
        return off, max((o + s for o, s in zip(off, size)), default=0)

    def arena_bytes(self, values: Mapping[str, int]) -> int:
        return self.layout(values)[1]

    def nbytes(self, name: str, values: Mapping[str, int]) -> int:
        return max(0, _value(self.requests[name].nbytes, values))

    def spans(self, values: Mapping[str, int]) -> dict[str, tuple[int, int]]:
        """(byte offset, byte size) of every tensor for the given symbol values."""
        off, _ = self.layout(values)
        return {name: (off[k], self.nbytes(name, values)) for name, k in self.buffer_of.items()}

    def liveness_bound(self, values: Mapping[str, int]) -> int:
        """Max over steps of the bytes live at that step (each buffer rounded up to ALIGN, as
        any 64-byte aligned placement needs): no placement of these buffers can be smaller."""
        self._check_values(values)
        events: dict[int, int] = {}
        for k, b in enumerate(self.buffers):
            n = self.buffer_size(k, values)
            events[b.start] = events.get(b.start, 0) + n
            events[b.end + 1] = events.get(b.end + 1, 0) - n
        live = peak = 0
        for step in sorted(events):
            live += events[step]
            peak = max(peak, live)
        return peak

    def stats(self, values: Mapping[str, int], workspace: Callable[[str], bool] = lambda n: False) -> dict[str, int]:
        """Arena bytes as planned, the sum of all tensor sizes (one buffer per tensor), the bytes
        of the operators' workspaces, and the liveness lower bound, for the given symbol values."""
        sizes = {n: self.nbytes(n, values) for n in self.requests}
        return {
            "arena_bytes": self.arena_bytes(values),
            "intermediate_bytes": sum(v for n, v in sizes.items() if not workspace(n)),
            "workspace_bytes": sum(v for n, v in sizes.items() if workspace(n)),
            "liveness_bound_bytes": self.liveness_bound(values),
            "inplace_tensors": sum(1 for r in self.requests.values() if r.alias is not None),
            "buffers": len(self.buffers),
        }


def _buffers(requests: Iterable[Request]) -> tuple[list[Buffer], dict[str, Request], dict[str, int]]:
    reqs: dict[str, Request] = {}
    for r in requests:
        if r.name in reqs:
            raise ValueError(f"memory plan: tensor {r.name!r} requested twice")
        if r.end < r.start:
            raise ValueError(f"memory plan: tensor {r.name!r} ends (step {r.end}) before it starts ({r.start})")
        reqs[r.name] = r
    buffers: list[Buffer] = []
    buffer_of: dict[str, int] = {}
    taken: set[str] = set()
    for r in sorted(reqs.values(), key=lambda r: r.start):
        if r.alias is None:
            buffer_of[r.name] = len(buffers)
            buffers.append(Buffer([r.name], [r.nbytes], r.start, r.end))
            continue
        src = reqs.get(r.alias)
        if (src is None or r.alias in taken or src.end != r.start or src.start >= r.start
                or r.alias not in buffer_of):
            raise ValueError(f"memory plan: {r.name!r} cannot take over the bytes of {r.alias!r} "
                             "(it must be a tensor written at an earlier step whose last read is "
                             "the step writing this one, taken over once)")
        taken.add(r.alias)
        k = buffer_of[r.alias]
        b = buffers[k]
        b.names.append(r.name)
        if r.nbytes not in b.sizes:
            b.sizes.append(r.nbytes)
        b.end = max(b.end, r.end)
        buffer_of[r.name] = k
    return buffers, reqs, buffer_of


class _Placer:
    """Greedy insertion of buffers into the below-DAG, tracking offsets at the reference values."""

    def __init__(self, buffers: list[Buffer], sizes: list[list[int]], weights: list[float]):
        self.b = buffers
        self.size = sizes            # per reference value, per buffer
        self.w = weights             # per reference value: 1 / liveness bound
        n = len(buffers)
        self.below: list[set[int]] = [set() for _ in range(n)]
        self.above: list[set[int]] = [set() for _ in range(n)]
        self.anc = [0] * n           # bitset of every buffer (transitively) below
        self.off = [[0] * n for _ in sizes]
        self.placed: list[int] = []
        self.arena = [0 for _ in sizes]

    def _refresh(self) -> None:
        """Offsets (longest paths) and ancestor sets of the placed buffers, in topological order."""
        indeg = {k: len(self.below[k]) for k in self.placed}
        ready = [k for k in self.placed if indeg[k] == 0]
        order = []
        while ready:
            k = ready.pop()
            order.append(k)
            for j in self.above[k]:
                indeg[j] -= 1
                if indeg[j] == 0:
                    ready.append(j)
        for r in range(len(self.size)):
            off, size = self.off[r], self.size[r]
            for k in order:
                off[k] = max((off[j] + size[j] for j in self.below[k]), default=0)
            self.arena[r] = max((off[k] + size[k] for k in order), default=0)
        for k in order:
            a = 0
            for j in self.below[k]:
                a |= self.anc[j] | (1 << j)
            self.anc[k] = a
        self.order = order

    def insert(self, k: int) -> None:
        b = self.b[k]
        conflicts = [j for j in self.placed if self.b[j].start <= b.end and b.start <= self.b[j].end]
        refs = range(len(self.size))
        cands: set[int] = {0}  # bitsets of the conflicts going below k
        down = {j: (self.anc[j] | (1 << j)) for j in conflicts}
        cmask = 0
        for j in conflicts:
            cmask |= 1 << j
        for r in refs:
            end = {j: self.off[r][j] + self.size[r][j] for j in conflicts}
            for level in set(end.values()):
                s = 0
                for j in conflicts:
                    if end[j] <= level:
                        s |= down[j]
                cands.add(s & cmask)
        for j in conflicts:
            cands.add(down[j] & cmask)
        best, best_key = 0, None
        for s in cands:
            below = [j for j in conflicts if s >> j & 1]
            above = [j for j in conflicts if not s >> j & 1]
            cost = gap = top_cost = 0.0
            for r in refs:
                off, size = self.off[r], self.size[r]
                base = max((off[j] + size[j] for j in below), default=0)
                top = base + size[k]
                room = min((off[j] for j in above), default=None)
                push = max(0, top - room) if room is not None else 0
                cost += max(self.arena[r] + push, top) * self.w[r]
                gap += (room - top if room is not None and room >= top else 0) * self.w[r]
                top_cost += top * self.w[r]
            key = (round(cost, 12), round(gap, 12), round(top_cost, 12), s)
            if best_key is None or key < best_key:
                best, best_key = s, key
        for j in conflicts:
            if best >> j & 1:
                self.below[k].add(j)
                self.above[j].add(k)
            else:
                self.above[k].add(j)
                self.below[j].add(k)
        self.placed.append(k)
        self._refresh()

    def cost(self) -> float:
        return sum(a * w for a, w in zip(self.arena, self.w))


def _reduce(below: list[set[int]], anc: list[int]) -> list[list[int]]:
    """Drop ``below`` edges implied by others (j below k is implied if j is below another i below k)."""
    out = []
    for preds in below:
        keep = [j for j in preds if not any(i != j and anc[i] >> j & 1 for i in preds)]
        out.append(sorted(keep))
    return out


def plan(requests: Iterable[Request | tuple]) -> Plan:
    """Place the requests (``Request`` or ``(name, nbytes, first_step, last_step)``) in one arena."""
    reqs = [r if isinstance(r, Request) else Request(*r) for r in requests]
    buffers, by_name, buffer_of = _buffers(reqs)
    result = Plan(buffers, by_name, buffer_of)
    if not buffers:
        return result
    syms = result.symbols
    refs = [dict.fromkeys(syms, v) for v in REFERENCE_VALUES]
    sizes = [[result.buffer_size(k, values) for k in range(len(buffers))] for values in refs]
    weights = [1.0 / max(1, result.liveness_bound(values)) for values in refs]
    score = [sum(sizes[r][k] * weights[r] for r in range(len(refs))) for k in range(len(buffers))]
    n = range(len(buffers))
    orders = [
        sorted(n, key=lambda k: (-score[k], buffers[k].start, k)),
        sorted(n, key=lambda k: (buffers[k].start, -score[k], k)),
        sorted(n, key=lambda k: (-(buffers[k].end - buffers[k].start), -score[k], k)),
        sorted(n, key=lambda k: (-score[k] * (buffers[k].end - buffers[k].start + 1), k)),
    ]
    best: _Placer | None = None
    for order in orders:
        p = _Placer(buffers, sizes, weights)
        for k in order:
            p.insert(k)
        if best is None or p.cost() < best.cost() - 1e-12:
            best = p
    assert best is not None
    for k, preds in enumerate(_reduce(best.below, best.anc)):
        buffers[k].below = preds
    result.order = list(best.order)
    return result
