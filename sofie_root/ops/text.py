"""Text features: TfIdfVectorizer over integer token ids (n-gram counts, TF / IDF / TFIDF).

The pool of n-grams (an attribute) becomes, at compile time, a trie laid out as flat tables
(its edges in an open-addressing hash table keyed by (node, token); each node's output column,
or -1 when the n-gram it ends is not counted), emitted as static arrays. The run-time loop follows
``onnx.reference`` (and onnxruntime): for each skip distance 1 .. max_skip_count + 1, every start
position walks the trie along tokens ``skip`` apart and counts each n-gram of a length in
[min_gram_length, max_gram_length] it meets; unigrams are counted once (not once per skip).
String pools (``pool_strings``) are not supported: string tensors are out of scope.

IDF/TFIDF weights follow the specification and onnxruntime: ``weights[i]`` is the weight of the
pool's i-th n-gram, applied in its column ``ngram_indexes[i]``. onnx.reference reads
``weights[column]`` instead, which differs when ``ngram_indexes`` is not in pool order.
"""

from __future__ import annotations

import itertools

from ..ir.dtypes import FLOAT32, FLOAT64, INT64
from .base import NodeView, Operator, OutInfo, register

_MODES = ("TF", "IDF", "TFIDF")


class _Trie:
    """The pool's n-grams as nested dicts, built exactly as the reference builds its maps (a
    repeated n-gram takes the id of its last occurrence; n-gram sizes outside [min, max] are not
    inserted but use up their ids)."""

    def __init__(self):
        self.root: dict = {"id": 0, "kids": {}}

    def add(self, tokens, ngram_id: int) -> None:
        node = self.root
        for tok in tokens:
            node = node["kids"].setdefault(int(tok), {"id": 0, "kids": {}})
        node["id"] = ngram_id

    def flatten(self, out_index) -> tuple[list[int], list[tuple[int, int, int]]]:
        """The output column of every node (node 0 is the root; -1: no n-gram counted there)
        and the edges (parent, token, child)."""
        col, edges = [], []
        order = [self.root]
        k = 0
        while k < len(order):
            node = order[k]
            col.append(out_index(node["id"]))
            for tok, sub in sorted(node["kids"].items()):
                edges.append((k, tok, len(order)))
                order.append(sub)
            k += 1
        return col, edges


_M64 = (1 << 64) - 1
#: the multipliers of the edge hash (the same in Python, which fills the table, and in C++)
_HT, _HN = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F


def _hash(node: int, tok: int) -> int:
    h = ((tok & _M64) * _HT + node * _HN) & _M64
    return h ^ (h >> 29)


def _root_table(roots: list[tuple[int, int]], lo: int, hi: int) -> list[int]:
    out = [-1] * (hi - lo + 1)
    for tok, ch in roots:
        out[tok - lo] = ch
    return out


def hash_table(edges: list[tuple[int, int, int]]) -> tuple[list[int], list[int], list[int]]:
    """The trie's edges in an open-addressing table (linear probing, at most half full, a power
    of two long): per slot the parent (-1: empty), the token and the child. Looking up a child is
    then one hash and a probe or two, whatever the pool's size (onnxruntime uses hash maps too)."""
    size = 2
    while size < 2 * len(edges):
        size *= 2
    parent, key, child = [-1] * size, [0] * size, [0] * size
    for par, tok, ch in edges:
        slot = _hash(par, tok) & (size - 1)
        while parent[slot] != -1:
            slot = (slot + 1) & (size - 1)
        parent[slot], key[slot], child[slot] = par, tok, ch
    return parent, key, child


@register
class TfIdfVectorizer(Operator):
    """ONNX TfIdfVectorizer (opset 9) on int32/int64 token ids: n-gram counts of each row with
    skips, TF, IDF or TFIDF weighting; input [C] or [B, C]. String pools are refused."""

    op_type = "TfIdfVectorizer"
    dtypes = ("int32", "int64")

    def check(self, v: NodeView) -> str | None:
        if v.attr("pool_strings") is not None:
            return "string pools (pool_strings) are not supported: string tensors are out of scope"
        reason = super().check(v)
        if reason:
            return reason
        if v.attr("mode") not in _MODES:
            return f"mode must be one of {', '.join(_MODES)}, got {v.attr('mode')!r}"
        return None

    def _layout(self, v: NodeView) -> tuple[_Trie, int, int, list[float] | None]:
        """(trie, number of n-grams, output size, weights); invalid attributes raise."""
        lo, hi = int(v.attr("min_gram_length", 0)), int(v.attr("max_gram_length", 0))
        if not 1 <= lo <= hi:
            raise v.fail(f"needs 1 <= min_gram_length ({lo}) <= max_gram_length ({hi})")
        if int(v.attr("max_skip_count", 0)) < 0:
            raise v.fail(f"max_skip_count must be >= 0, got {v.attr('max_skip_count')}")
        pool = [int(t) for t in (v.attr("pool_int64s") or [])]
        counts = [int(c) for c in (v.attr("ngram_counts") or [])]
        indexes = [int(i) for i in (v.attr("ngram_indexes") or [])]
        if not indexes:
            raise v.fail("ngram_indexes is empty")
        if any(i < 0 for i in indexes):
            raise v.fail("ngram_indexes must be non-negative")
        if any(not 0 <= c <= len(pool) for c in counts) or any(a > b for a, b in itertools.pairwise(counts)):
            raise v.fail(f"ngram_counts {counts} must be increasing start positions in the pool of {len(pool)}")
        trie, ngram_id = _Trie(), 1
        for size, start in enumerate(counts, start=1):
            end = counts[size] if size < len(counts) else len(pool)
            if (end - start) % size:
                raise v.fail(f"the pool's {size}-grams ({end - start} tokens from position {start}) are not a "
                             f"whole number of {size}-grams")
            for s in range(start, end, size):
                if lo <= size <= hi:
                    trie.add(pool[s:s + size], ngram_id)
                ngram_id += 1
        total = ngram_id - 1
        if len(indexes) < total:
            raise v.fail(f"the pool has {total} n-grams but ngram_indexes has {len(indexes)} entries")
        out_size = max(indexes) + 1
        weights = v.attr("weights")
        if v.attr("mode") != "TF" and weights is not None and len(weights) > 0:
            if len(weights) != len(indexes):
                raise v.fail(f"weights has {len(weights)} entries, one per n-gram of ngram_indexes "
                             f"({len(indexes)}) expected")
            # the weight of the i-th n-gram goes to its column ngram_indexes[i] (the specification,
            # onnxruntime; onnx.reference reads weights by column, the same when the columns are
            # in pool order)
            by_col = [0.0] * out_size
            for w, col in zip(weights, indexes):
                by_col[col] = float(w)
            return trie, total, out_size, by_col
        return trie, total, out_size, None

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        if x.rank > 2:
            raise v.fail(f"input must be [C] or [B, C], got {x}")
        _, _, out_size, _ = self._layout(v)
        shape = (x.shape[0], out_size) if x.rank == 2 else (out_size,)
        return [OutInfo(FLOAT32, shape)]

    def emit(self, v: NodeView, e) -> str:
        trie, _, out_size, weights = self._layout(v)
        indexes = [int(i) for i in v.attr("ngram_indexes")]
        col, edges = trie.flatten(lambda i: indexes[i - 1] if i else -1)
        x = v.input(0)
        rows = x.shape[0] if x.rank == 2 else 1
        c = x.shape[-1] if x.rank >= 1 else 1
        lo, hi = int(v.attr("min_gram_length")), int(v.attr("max_gram_length"))
        skips = int(v.attr("max_skip_count")) + 1
        y = e.out()
        # one pass per row: the row is cleared, counted and weighted while it is in cache
        # (three passes over the whole output before: 0.94x onnxruntime at [256, 64] tokens)
        lines: list[str] = []
        body: list[str] = []
        if edges:
            def table(name: str, ctype: str, values: list[int]) -> str:
                return f"static const {ctype} {name}[] = {{{', '.join(str(int(x)) for x in values)}}};"

            # the root's children (every walk's first step) in a direct table when their tokens
            # span a small range (vocabulary ids usually do), the other edges in the hash table
            roots = [(tok, ch) for par, tok, ch in edges if par == 0]
            lo_tok, hi_tok = min(t for t, _ in roots), max(t for t, _ in roots)
            direct = hi_tok - lo_tok < max(4096, 8 * len(edges))
            hp, hk, hc = hash_table([ed for ed in edges if ed[0] != 0] if direct else edges)
            mask = len(hp) - 1
            tp, tk, tc, to, tr = e.tmp("parent"), e.tmp("key"), e.tmp("child"), e.tmp("col"), e.tmp("root")
            lines += [table(tp, "std::int32_t", hp),
                      f"static const std::int64_t {tk}[] = {{{', '.join(e.lit(k, INT64) for k in hk)}}};",
                      table(tc, "std::int32_t", hc), table(to, "std::int32_t", col),
                      *([table(tr, "std::int32_t", _root_table(roots, lo_tok, hi_tok))] if direct else [])]
            # every skip distance starts its walks at the same root children: looked up once per row
            pre = direct and isinstance(c, int) and 0 < c <= 4096
            if pre:
                body += [f"   std::int32_t rn_[{c}];",
                         "   for (std::int64_t i = 0; i < C_; ++i) {",
                         f"      const std::uint64_t d = std::uint64_t(std::int64_t(xr[i])) - std::uint64_t({e.lit(lo_tok, INT64)});",
                         f"      rn_[i] = d > {hi_tok - lo_tok}u ? -1 : {tr}[d];",
                         "   }"]
            body += [f"   std::int64_t min_len = {lo};",
                     f"   for (std::int64_t skip = 1; skip <= {skips}; ++skip) {{",
                     "      for (std::int64_t start = 0; start < C_; ++start) {",
                     "         if (start + skip * (min_len - 1) >= C_) break;  // no n-gram fits any more",
                     "         std::int32_t node = 0;",
                     f"         for (std::int64_t len = 1, item = start; len <= {hi} && item < C_; ++len, item += skip) {{",
                     "            const std::int64_t tok = std::int64_t(xr[item]);",
                     *(["            if (len == 1) {  // the root's children: looked up above",
                        "               node = rn_[item];",
                        "               if (node < 0) break;",
                        f"               if (min_len == 1 && {to}[node] >= 0) yr[{to}[node]] += 1.0f;",
                        "               continue;",
                        "            }"] if pre else []),
                     *(["            if (len == 1) {  // the root's children: a direct table",
                        f"               const std::uint64_t d = std::uint64_t(tok) - std::uint64_t({e.lit(lo_tok, INT64)});",
                        f"               if (d > {hi_tok - lo_tok}u || {tr}[d] < 0) break;",
                        f"               node = {tr}[d];",
                        f"               if (min_len == 1 && {to}[node] >= 0) yr[{to}[node]] += 1.0f;",
                        "               continue;",
                        "            }"] if direct and not pre else []),
                     f"            std::uint64_t h = std::uint64_t(tok) * {_HT}ULL + std::uint64_t(node) * {_HN}ULL;",
                     f"            std::uint64_t slot = (h ^ (h >> 29)) & {mask}u;",
                     f"            while ({tp}[slot] != -1 && ({tp}[slot] != node || {tk}[slot] != tok)) "
                     f"slot = (slot + 1) & {mask}u;",
                     f"            if ({tp}[slot] == -1) break;  // no n-gram continues with this token",
                     f"            node = {tc}[slot];",
                     f"            if (len >= min_len && {to}[node] >= 0) yr[{to}[node]] += 1.0f;",
                     "         }",
                     "      }",
                     "      if (min_len == 1) {  // unigrams are counted once, not once per skip distance",
                     "         min_len = 2;",
                     f"         if (min_len > {hi}) break;",
                     "      }",
                     "   }"]
        mode = v.attr("mode")
        if mode == "IDF" and weights is None:
            body.append(f"   for (std::int64_t j = 0; j < {out_size}; ++j) yr[j] = yr[j] > 0 ? 1.0f : 0.0f;")
        elif mode in ("IDF", "TFIDF") and weights is not None:
            tw = e.tmp("w")
            value = "(yr[j] > 0 ? float(w) : 0.0f)" if mode == "IDF" else "float(w * double(yr[j]))"
            lines.append(f"static const double {tw}[] = {{{', '.join(e.lit(w, FLOAT64) for w in weights)}}};")
            body.append(f"   for (std::int64_t j = 0; j < {out_size}; ++j) {{ const double w = {tw}[j]; yr[j] = {value}; }}")
        lines += [f"const std::int64_t C_ = {e.dim(c)};",
                  "(void)C_;",
                  f"for (std::int64_t r = 0; r < {e.dim(rows)}; ++r) {{",
                  f"   const auto *xr = {e.inp(0)} + r * C_;",
                  "   (void)xr;",
                  f"   float *yr = {y} + r * {out_size};",
                  f"   std::fill(yr, yr + {out_size}, 0.0f);",
                  *body,
                  "}"]
        return "\n".join(lines)
