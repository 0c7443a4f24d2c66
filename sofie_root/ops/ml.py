"""ai.onnx.ml operators: tree ensembles (boosted decision trees, random forests) and the small
helpers converters emit around them (Binarizer, ArrayFeatureExtractor, LabelEncoder, ZipMap).

Tree ensembles are lowered by the ONNX frontend (see :meth:`_TreeOp.lower`): the node's big
attribute arrays become one flat table per field (weights of the model, stored in the weight
blob, never as C++ literals) and the node becomes an internal ``sofie.TreeEnsembleFlat`` node.
``TreeEnsembleRegressor``/``TreeEnsembleClassifier`` (ai.onnx.ml 1-3) and ``TreeEnsemble``
(ai.onnx.ml 5) all lower to it.

The flat form is built for a branch-free traversal: every node has a pair of children
(``child[2n], child[2n+1]``, packed with the feature and threshold in one record per node when
the splits are ordered comparisons), leaves point to themselves, and a tree is walked for a fixed number
of steps (its depth) with ``n = child[2n + go_right]``. Eight trees are walked side by side so
their independent load chains overlap. When every split is one of ``<=, <, >=, >`` (XGBoost,
LightGBM, scikit-learn), the comparison is rewritten to ``x <= t`` (``x < t`` is
``x <= nextafter(t, -inf)``; ``>=``/``>`` swap the children) and the missing-value direction
becomes one bit, so the step has no branch at all. Other modes (==, !=, set membership) take a
per-node switch.

Semantics follow onnxruntime where it and onnx.reference differ (documented in docs/guide/bdt.md):

* a missing value (NaN) takes the true branch when ``missing_value_tracks_true`` is set and
  otherwise whatever the comparison gives (NaN != t is true);
* classifiers with one class id and two labels (XGBoost/LightGBM/GradientBoosting binary,
  RandomForest binary): score ``s`` of class 1, probabilities ``[1-s, s]`` when every weight is
  positive, ``[logistic(-s), logistic(s)]`` with LOGISTIC and ``[-s, s]`` otherwise; the label is
  class 1 when ``s > 0.5`` (positive weights) or ``s > 0``. Binary variants where runtimes
  disagree (PROBIT, class id 1 alone, two base values) are refused;
* MIN/MAX aggregation: a target no tree contributed to scores 0 (plus its base value).

One exception: a regressor with a single target applies LOGISTIC/SOFTMAX/SOFTMAX_ZERO as the spec
says, where onnxruntime applies only PROBIT to a single target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import ShapeInferenceError
from ..ir.dtypes import FLOAT32, FLOAT64, INT64, dtype_from_numpy
from .base import NodeView, Operator, OutInfo, register

_MODES = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4, "BRANCH_NEQ": 5,
          "BRANCH_MEMBER": 6, "LEAF": 7}
_LEAF = 7
_POST = {"NONE": 0, "SOFTMAX": 1, "LOGISTIC": 2, "SOFTMAX_ZERO": 3, "PROBIT": 4}
#: aggregate_function codes of TreeEnsemble (ai.onnx.ml 5); the older operators use the names
_AGG = {"AVERAGE": 0, "SUM": 1, "MIN": 2, "MAX": 3}
#: trees walked side by side (independent load chains the CPU overlaps)
LANES = 8
#: events per block of the batch loop (see TreeEnsembleFlat.emit)
ROW_BLOCK = 32
_X_DTYPES = ("float32", "float64", "int32", "int64")


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _floats(v: NodeView, name: str, tensor_name: str | None = None) -> np.ndarray | None:
    """A float attribute list, or its ``*_as_tensor`` (double) variant."""
    if tensor_name and v.attr(tensor_name) is not None:
        return np.asarray(v.attr(tensor_name), dtype=np.float64).reshape(-1)
    val = v.attr(name)
    if val is None:
        return None
    arr = np.asarray(val)
    return arr.astype(np.float64 if arr.dtype == np.float64 else np.float32).reshape(-1)


class _Forest:
    """Trees in a neutral form: nodes (mode, feature, split, missing-true, true/false child) with
    flat indices, per-node leaf entries (target, weight), and tree roots."""

    def __init__(self, where: str):
        self.where = where
        self.mode: list[int] = []
        self.feat: list[int] = []
        self.split: list[float] = []
        self.mtt: list[int] = []
        self.true: list[int] = []
        self.false: list[int] = []
        self.members: list[list[float]] = []
        self.entries: list[list[tuple[int, float]]] = []
        self.roots: list[int] = []

    def add(self, mode: int, feat: int, split: float, mtt: int, members: Sequence[float] = ()) -> int:
        self.mode.append(mode)
        self.feat.append(int(feat))
        self.split.append(float(split))
        self.mtt.append(int(mtt))
        self.true.append(-1)
        self.false.append(-1)
        self.members.append(list(members))
        self.entries.append([])
        return len(self.mode) - 1

    def fail(self, msg: str) -> ShapeInferenceError:
        return ShapeInferenceError(f"{self.where}: {msg}")

    def depths(self) -> list[int]:
        """Depth of every tree (number of splits on its longest path); refuses cycles."""
        out = []
        n = len(self.mode)
        for t, root in enumerate(self.roots):
            depth = 0
            frontier = [root]
            seen = 0
            while True:
                nxt = []
                for i in frontier:
                    if self.mode[i] == _LEAF:
                        continue
                    for c in (self.true[i], self.false[i]):
                        if not 0 <= c < n:
                            raise self.fail(f"tree {t}: node {i} has a child {c} that does not exist")
                        nxt.append(c)
                if not nxt:
                    break
                depth += 1
                seen += len(nxt)
                if depth > n or seen > 4 * n:
                    raise self.fail(f"tree {t} is not a tree (a node is reached twice or a cycle)")
                frontier = nxt
            out.append(depth)
        return out


def _forest_v3(v: NodeView, prefix: str) -> _Forest:
    """TreeEnsembleRegressor / TreeEnsembleClassifier (ai.onnx.ml 1-3) attributes."""
    f = _Forest(v.label)
    tids = list(v.attr("nodes_treeids") or [])
    nids = list(v.attr("nodes_nodeids") or [])
    modes = [_s(m) for m in (v.attr("nodes_modes") or [])]
    feats = list(v.attr("nodes_featureids") or [])
    vals = _floats(v, "nodes_values", "nodes_values_as_tensor")
    tnode = list(v.attr("nodes_truenodeids") or [])
    fnode = list(v.attr("nodes_falsenodeids") or [])
    mtt = list(v.attr("nodes_missing_value_tracks_true") or [0] * len(tids))
    n = len(tids)
    if not n:
        raise f.fail("the ensemble has no nodes")
    if vals is None:
        vals = np.zeros(n)
    for name, arr in (("nodes_nodeids", nids), ("nodes_modes", modes), ("nodes_featureids", feats),
                      ("nodes_values", vals), ("nodes_truenodeids", tnode), ("nodes_falsenodeids", fnode),
                      ("nodes_missing_value_tracks_true", mtt)):
        if len(arr) != n:
            raise f.fail(f"attribute {name} has {len(arr)} entries, nodes_treeids has {n}")
    index: dict[tuple[int, int], int] = {}
    for i in range(n):
        if modes[i] not in _MODES or modes[i] == "BRANCH_MEMBER":
            raise f.fail(f"node {i}: unknown mode {modes[i]!r}")
        key = (int(tids[i]), int(nids[i]))
        if key in index:
            raise f.fail(f"tree {key[0]} has node id {key[1]} twice")
        index[key] = f.add(_MODES[modes[i]], feats[i], vals[i], mtt[i])
    for i in range(n):
        if f.mode[i] == _LEAF:
            continue
        for lst, ids in ((f.true, tnode), (f.false, fnode)):
            key = (int(tids[i]), int(ids[i]))
            if key not in index:
                raise f.fail(f"tree {key[0]}: node {int(nids[i])} points to node id {key[1]}, which does not exist")
            lst[i] = index[key]
    # roots: the node of each tree no other node points to (converters put it first)
    pointed = {c for i in range(n) if f.mode[i] != _LEAF for c in (f.true[i], f.false[i])}
    seen: set[int] = set()
    for i in range(n):
        t = int(tids[i])
        if t not in seen and i not in pointed:
            seen.add(t)
            f.roots.append(i)
    if len(seen) != len({int(t) for t in tids}):
        raise f.fail("a tree has no root (every node of it is some node's child)")
    # leaf entries
    e_tids = list(v.attr(f"{prefix}_treeids") or [])
    e_nids = list(v.attr(f"{prefix}_nodeids") or [])
    e_ids = list(v.attr(f"{prefix}_ids") or [])
    e_w = _floats(v, f"{prefix}_weights", f"{prefix}_weights_as_tensor")
    if e_w is None:
        e_w = np.zeros(len(e_ids))
    if not len(e_tids) == len(e_nids) == len(e_ids) == len(e_w):
        raise f.fail(f"the {prefix}_* attributes have different lengths")
    for t, nid, tgt, w in zip(e_tids, e_nids, e_ids, e_w):
        key = (int(t), int(nid))
        if key not in index:
            raise f.fail(f"a {prefix} weight names tree {key[0]} node {key[1]}, which does not exist")
        f.entries[index[key]].append((int(tgt), float(w)))
    f.weights_double = (v.attr(f"{prefix}_weights_as_tensor") is not None)  # type: ignore[attr-defined]
    return f


def _forest_v5(v: NodeView) -> _Forest:
    """TreeEnsemble (ai.onnx.ml 5): split nodes and leaves in separate arrays."""
    f = _Forest(v.label)

    def arr(name, dtype=None):
        val = v.attr(name)
        if val is None:
            return None
        return np.asarray(val, dtype=dtype).reshape(-1)

    splits = arr("nodes_splits", np.float64)
    feats = arr("nodes_featureids", np.int64)
    modes = arr("nodes_modes", np.int64)
    tnode = arr("nodes_truenodeids", np.int64)
    fnode = arr("nodes_falsenodeids", np.int64)
    tleaf = arr("nodes_trueleafs", np.int64)
    fleaf = arr("nodes_falseleafs", np.int64)
    ltgt = arr("leaf_targetids", np.int64)
    lw = arr("leaf_weights", np.float64)
    roots = arr("tree_roots", np.int64)
    for name, a in (("nodes_splits", splits), ("nodes_featureids", feats), ("nodes_modes", modes),
                    ("nodes_truenodeids", tnode), ("nodes_falsenodeids", fnode), ("nodes_trueleafs", tleaf),
                    ("nodes_falseleafs", fleaf), ("leaf_targetids", ltgt), ("leaf_weights", lw),
                    ("tree_roots", roots)):
        if a is None:
            raise f.fail(f"attribute {name} is required")
    n = len(splits)
    mtt = arr("nodes_missing_value_tracks_true", np.int64)
    if mtt is None:
        mtt = np.zeros(n, np.int64)
    for name, a in (("nodes_featureids", feats), ("nodes_modes", modes), ("nodes_truenodeids", tnode),
                    ("nodes_falsenodeids", fnode), ("nodes_trueleafs", tleaf), ("nodes_falseleafs", fleaf),
                    ("nodes_missing_value_tracks_true", mtt)):
        if len(a) != n:
            raise f.fail(f"attribute {name} has {len(a)} entries, nodes_splits has {n}")
    if len(ltgt) != len(lw):
        raise f.fail("leaf_targetids and leaf_weights have different lengths")
    members = arr("membership_values", np.float64)
    member_iter = iter(members.tolist()) if members is not None else iter(())
    for i in range(n):
        m = int(modes[i])
        if not 0 <= m <= 6:
            raise f.fail(f"node {i}: unknown mode {m}")
        sets: list[float] = []
        if m == 6:
            for val in member_iter:
                if math.isnan(val):
                    break
                sets.append(val)
            else:
                raise f.fail(f"node {i}: membership_values has no NaN-terminated set for this node")
        f.add(m, feats[i], splits[i], mtt[i], sets)
    leaf0 = n
    for t, w in zip(ltgt, lw):
        k = f.add(_LEAF, 0, 0.0, 0)
        f.entries[k].append((int(t), float(w)))

    def target(idx, is_leaf, what):
        idx = int(idx)
        limit = len(ltgt) if is_leaf else n
        if not 0 <= idx < limit:
            raise f.fail(f"{what} {idx} is out of range (0..{limit - 1})")
        return leaf0 + idx if is_leaf else idx

    for i in range(n):
        f.true[i] = target(tnode[i], tleaf[i], f"node {i}: true child")
        f.false[i] = target(fnode[i], fleaf[i], f"node {i}: false child")
    for r in roots:
        r = int(r)
        if not 0 <= r < n:
            raise f.fail(f"tree root {r} is out of range")
        if tleaf[r] and fleaf[r] and tnode[r] == fnode[r]:
            f.roots.append(leaf0 + int(tnode[r]))  # a tree that is a single leaf
        else:
            f.roots.append(r)
    f.weights_double = np.asarray(v.attr("leaf_weights")).dtype == np.float64  # type: ignore[attr-defined]
    return f


def _next_below(t: float, dtype) -> float:
    if t == -math.inf:
        return math.nan  # x < -inf never holds; x <= NaN never holds either
    return float(np.nextafter(dtype(t), dtype(-np.inf)))


def flatten(f: _Forest, n_features: int, n_targets: int, thr_dtype, w_dtype) -> tuple[dict, dict[str, np.ndarray]]:
    """The flat tables of the generated traversal (see the module docstring) and the small
    attributes of the ``sofie.TreeEnsembleFlat`` node."""
    n_trees = len(f.roots)
    if n_trees == 0:
        raise f.fail("the ensemble has no trees")
    depths = f.depths()
    reach: set[int] = set()
    for root in f.roots:
        stack = [root]
        while stack:
            i = stack.pop()
            if i in reach:
                continue
            reach.add(i)
            if f.mode[i] != _LEAF:
                stack += [f.true[i], f.false[i]]
    for i in reach:
        if f.mode[i] != _LEAF and not 0 <= f.feat[i] < n_features:
            raise f.fail(f"node {i} reads feature {f.feat[i]}, but the input has {n_features} features")
        for tgt, _ in f.entries[i]:
            if not 0 <= tgt < n_targets:
                raise f.fail(f"a leaf weight is for target/class {tgt}, but there are {n_targets}")
    split_modes = {f.mode[i] for i in reach if f.mode[i] != _LEAF}
    canonical = split_modes <= {0, 1, 2, 3} and not any(
        math.isnan(f.split[i]) for i in reach if f.mode[i] != _LEAF)
    n = len(f.mode) + 1  # + one padding leaf for the lanes past the last tree
    pad = n - 1
    fk = np.zeros(n, np.int32)
    thr = np.zeros(n, thr_dtype)
    child = np.empty(2 * n, np.int32)
    mode = np.zeros(n, np.int32)
    mstart = np.zeros(n + 1, np.int32)
    mvals: list[float] = []
    for i in range(n):
        if i == pad or f.mode[i] == _LEAF:
            child[2 * i] = child[2 * i + 1] = i
            mstart[i + 1] = len(mvals)
            continue
        m, t, mt = f.mode[i], f.split[i], f.mtt[i]
        a, b = f.true[i], f.false[i]
        if canonical:
            flip = mt
            if m in (1, 2):
                t = _next_below(t, thr_dtype)
            if m in (2, 3):
                a, b = b, a
                flip = 1 - mt
            fk[i] = (f.feat[i] << 1) | flip
        else:
            fk[i] = (f.feat[i] << 1) | mt
            mode[i] = m
            mvals += f.members[i]
        mstart[i + 1] = len(mvals)
        thr[i] = t
        child[2 * i], child[2 * i + 1] = a, b
    n_groups = -(-n_trees // LANES)
    roots = np.full(n_groups * LANES, pad, np.int32)
    # trees of similar depth walk side by side (a group takes as many steps as its deepest
    # tree); the order only changes the order of the sum, which is accumulated in double
    order = sorted(range(n_trees), key=lambda t: depths[t])
    roots[:n_trees] = [f.roots[t] for t in order]
    depths = [depths[t] for t in order]
    gdepth = np.array([max(depths[g * LANES:(g + 1) * LANES]) for g in range(n_groups)], np.int32)
    arrays: dict[str, np.ndarray] = {"roots": roots, "gdepth": gdepth}
    if canonical:
        # one record per node, so a step touches one cache line: [feature<<1|nan_flip, child 0,
        # child 1, threshold bits] for float thresholds, [..., pad, threshold (2 words)] for double
        stride = 4 if thr.dtype == np.float32 else 6
        packed = np.zeros((n, stride), np.int32)
        packed[:, 0] = fk
        packed[:, 1:3] = child.reshape(n, 2)
        packed[:, stride - thr.itemsize // 4:] = thr.view(np.int32).reshape(n, -1)
        arrays["packed"] = packed.reshape(-1)
    else:
        arrays.update(fk=fk, thr=thr, child=child)
        arrays["mode"] = mode
        arrays["mstart"] = mstart
        arrays["mvals"] = np.array(mvals if mvals else [0.0], thr_dtype)
    single = all(len(f.entries[i]) == 1 for i in reach if f.mode[i] == _LEAF)
    if single:
        lw = np.zeros(n, w_dtype)
        lt = np.zeros(n, np.int32)
        for i in reach:
            if f.mode[i] == _LEAF:
                lt[i], lw[i] = f.entries[i][0]
        arrays["lw"] = lw
        if n_targets > 1:
            arrays["lt"] = lt
    else:
        lstart = np.zeros(n + 1, np.int32)
        et: list[int] = []
        ew: list[float] = []
        for i in range(n):
            if i < len(f.mode) and i in reach and f.mode[i] == _LEAF:
                for tgt, w in f.entries[i]:
                    et.append(tgt)
                    ew.append(w)
            lstart[i + 1] = len(et)
        arrays["lstart"] = lstart
        arrays["et"] = np.array(et or [0], np.int32)
        arrays["ew"] = np.array(ew or [0.0], w_dtype)
    attrs = {"n_trees": n_trees, "n_targets": n_targets, "canonical": int(canonical),
             "leaves": "single" if single else "csr"}
    return attrs, arrays


class _TreeOp(Operator):
    """Common part of the three tree-ensemble operators: checks and the lowering to
    ``sofie.TreeEnsembleFlat`` (the frontend calls :meth:`lower`; ``emit`` is never reached)."""

    domain = "ai.onnx.ml"
    dtypes = _X_DTYPES
    lowered_op = "TreeEnsembleFlat"
    #: the lowered node's inputs after X, in order (see ``TreeEnsembleFlat``)
    lowered_inputs = property(lambda self: FLAT_INPUTS)

    def check(self, v: NodeView) -> str | None:
        reason = super().check(v)
        if reason:
            return reason
        x = v.input(0)
        if x.rank != 2:
            return f"input X must be a matrix [N, features], got rank {x.rank}"
        if not isinstance(x.shape[1], int):
            return "the number of features (X's second dimension) must be known at compile time"
        return None

    def _thr_dtype(self, v: NodeView):
        return np.float64 if v.input(0).dtype == FLOAT64 else np.float32

    def lower(self, v: NodeView) -> tuple[dict, dict[str, np.ndarray]]:
        raise NotImplementedError

    def emit(self, v: NodeView, e) -> str:
        raise v.fail("tree ensembles are lowered to sofie.TreeEnsembleFlat by the frontend")


def _post(v: NodeView, value, where: str) -> int:
    if isinstance(value, (int, np.integer)):
        if not 0 <= int(value) <= 4:
            raise v.fail(f"unknown post_transform {value}")
        return int(value)
    name = _s(value or "NONE")
    if name not in _POST:
        raise v.fail(f"unknown post_transform {name!r} ({where})")
    return _POST[name]


@register
class TreeEnsembleRegressor(_TreeOp):
    """ai.onnx.ml TreeEnsembleRegressor (1-3): every mode, aggregate and post_transform; float output."""

    op_type = "TreeEnsembleRegressor"

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(FLOAT32, (v.input(0).shape[0], int(v.attr("n_targets", 1))))]

    def lower(self, v: NodeView):
        nt = int(v.attr("n_targets", 1))
        if nt < 1:
            raise v.fail(f"n_targets must be at least 1, got {nt}")
        f = _forest_v3(v, "target")
        agg = _s(v.attr("aggregate_function", "SUM"))
        if agg not in _AGG:
            raise v.fail(f"unknown aggregate_function {agg!r}")
        base = _floats(v, "base_values", "base_values_as_tensor")
        attrs, arrays = flatten(f, int(v.input(0).shape[1]), nt, self._thr_dtype(v),
                                np.float64 if f.weights_double else np.float32)  # type: ignore[attr-defined]
        attrs.update(kind="regressor", aggregate=_AGG[agg], post_transform=_post(v, v.attr("post_transform"), "regressor"),
                     out_dtype="float32")
        if base is not None and len(base):
            if len(base) != nt:
                raise v.fail(f"base_values has {len(base)} values for {nt} targets")
            arrays["base"] = np.asarray(base, np.float64)
        return attrs, arrays


@register
class TreeEnsembleClassifier(_TreeOp):
    """ai.onnx.ml TreeEnsembleClassifier (1-3) with int64 class labels: label and scores."""

    op_type = "TreeEnsembleClassifier"

    def check(self, v: NodeView) -> str | None:
        if v.attr("classlabels_strings") is not None and v.attr("classlabels_int64s") is None:
            return "string class labels are not supported (string tensors are out of scope); use int64 labels"
        return super().check(v)

    def infer(self, v: NodeView) -> list[OutInfo]:
        k = len(v.attr("classlabels_int64s") or [])
        return [OutInfo(INT64, (v.input(0).shape[0],)), OutInfo(FLOAT32, (v.input(0).shape[0], k))]

    def lower(self, v: NodeView):
        labels = np.asarray(v.attr("classlabels_int64s") or [], np.int64)
        k = len(labels)
        if k < 2:
            raise v.fail(f"a classifier needs at least 2 class labels, got {k}")
        f = _forest_v3(v, "class")
        post = _post(v, v.attr("post_transform"), "classifier")
        base = _floats(v, "base_values", "base_values_as_tensor")
        nb = 0 if base is None else len(base)
        used = sorted({t for es in f.entries for t, _ in es})
        binary = k == 2 and len(used) == 1
        attrs, arrays = flatten(f, int(v.input(0).shape[1]), k, self._thr_dtype(v),
                                np.float64 if f.weights_double else np.float32)  # type: ignore[attr-defined]
        if binary:
            if used != [0]:
                raise v.fail("binary classifier whose weights are all for class 1: onnxruntime and onnx.reference "
                             "disagree on its scores; not supported")
            if nb > 1 or post == _POST["PROBIT"]:
                raise v.fail("binary classifier with two base values or PROBIT: runtimes disagree on its "
                             "scores; not supported")
            positive = all(w >= 0 for es in f.entries for _, w in es)
            attrs.update(binary=1, all_positive=int(positive))
        else:
            if nb not in (0, k):
                raise v.fail(f"base_values has {nb} values for {k} classes")
            attrs.update(binary=0)
            arrays["scored"] = np.array([1 if (nb or c in used) else 0 for c in range(k)], np.int32)
        if nb:
            arrays["base"] = np.asarray(base, np.float64)
        arrays["labels"] = labels
        attrs.update(kind="classifier", aggregate=_AGG["SUM"], post_transform=post, out_dtype="float32")
        return attrs, arrays


@register
class TreeEnsemble(_TreeOp):
    """ai.onnx.ml TreeEnsemble (5): every mode incl. set membership, aggregate and post_transform."""

    op_type = "TreeEnsemble"
    dtypes = ("float32", "float64")

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(v.input(0).dtype, (v.input(0).shape[0], int(v.attr("n_targets", 1) or 1)))]

    def lower(self, v: NodeView):
        nt = int(v.attr("n_targets", 1) or 1)
        f = _forest_v5(v)
        agg = int(v.attr("aggregate_function", 1))
        if agg not in (0, 1, 2, 3):
            raise v.fail(f"unknown aggregate_function {agg}")
        thr = self._thr_dtype(v)
        attrs, arrays = flatten(f, int(v.input(0).shape[1]), nt, thr, thr)
        attrs.update(kind="regressor", aggregate=agg, post_transform=_post(v, v.attr("post_transform", 0), "ensemble"),
                     out_dtype=v.input(0).dtype.name)
        return attrs, arrays


#: inputs of sofie.TreeEnsembleFlat after X, in order; absent ones are empty names
FLAT_INPUTS = ("roots", "gdepth", "fk", "thr", "child", "mode", "mstart", "mvals", "lw", "lt", "lstart", "et", "ew",
               "base", "labels", "scored", "packed")


@register
class TreeEnsembleFlat(Operator):
    """Internal: a lowered tree ensemble (flat tables in the weight blob, see the module docstring)."""

    op_type = "TreeEnsembleFlat"
    domain = "sofie"
    internal = True

    def _has(self, v: NodeView, name: str) -> bool:
        return v.has_input(1 + FLAT_INPUTS.index(name))

    def _in(self, e, name: str) -> str:
        return e.inp(1 + FLAT_INPUTS.index(name))

    def check(self, v: NodeView) -> str | None:
        if v.input(0).dtype.name not in _X_DTYPES:
            return f"element type {v.input(0).dtype.name} is not supported"
        if v.input(0).rank != 2 or not isinstance(v.input(0).shape[1], int):
            return "X must be [N, features] with a known number of features"
        try:
            return self._check_tables(v)
        except (TypeError, ValueError, KeyError) as e:
            return f"malformed tables ({type(e).__name__}: {e})"

    def _check_tables(self, v: NodeView) -> str | None:
        """Every index the generated code follows stays in its table (the tables come from a
        model file when a saved model is loaded, so they are checked, not trusted)."""
        t = {}
        for k, name in enumerate(FLAT_INPUTS):
            if v.has_input(1 + k):
                arr = v.const(1 + k)
                if arr is None:
                    return f"table {name} must be a constant"
                t[name] = np.asarray(arr).reshape(-1)
        nf, nt, n_trees = int(v.input(0).shape[1]), int(v.attr("n_targets", 0)), int(v.attr("n_trees", 0))
        roots, gdepth = t.get("roots"), t.get("gdepth")
        if roots is None or gdepth is None or nt < 1 or n_trees < 1:
            return "roots, gdepth, n_targets and n_trees are required"
        if len(roots) % LANES or len(gdepth) != len(roots) // LANES or n_trees > len(roots):
            return "roots/gdepth do not match n_trees"
        if "packed" in t:
            stride = 6 if v.input(0).dtype == FLOAT64 else 4
            if len(t["packed"]) % stride:
                return "packed node table has a partial record"
            rec = t["packed"].reshape(-1, stride)
            n, feats, kids = len(rec), rec[:, 0] >> 1, rec[:, 1:3]
        else:
            if any(k not in t for k in ("fk", "thr", "child", "mode", "mstart", "mvals")):
                return "node tables are missing"
            n, feats, kids = len(t["fk"]), t["fk"] >> 1, t["child"]
            ms = t["mstart"]
            if (len(t["thr"]) != n or len(kids) != 2 * n or len(t["mode"]) != n or len(ms) != n + 1
                    or np.any(np.diff(ms) < 0) or ms[0] < 0 or ms[-1] > len(t["mvals"])):
                return "node tables have inconsistent sizes"
        if n < 1 or np.any(feats < 0) or np.any(feats >= nf) or np.any(kids < 0) or np.any(kids >= n):
            return "a node reads a feature or a child that does not exist"
        if np.any(roots < 0) or np.any(roots >= n) or np.any(gdepth < 0):
            return "a tree root does not exist"
        if v.attr("leaves") == "single":
            if len(t.get("lw", ())) != n or ("lt" in t and (len(t["lt"]) != n or np.any(t["lt"] < 0)
                                                            or np.any(t["lt"] >= nt))) or ("lt" not in t and nt > 1):
                return "leaf tables do not match the nodes"
        else:
            ls, et = t.get("lstart"), t.get("et")
            if (ls is None or et is None or len(ls) != n + 1 or np.any(np.diff(ls) < 0) or ls[0] < 0
                    or ls[-1] > len(et) or len(t.get("ew", ())) != len(et) or np.any(et < 0) or np.any(et >= nt)):
                return "leaf tables do not match the nodes"
        for name in ("base", "labels", "scored"):
            want = 1 if name == "base" and v.attr("binary") else nt  # a binary classifier: one score
            if name in t and len(t[name]) != want:
                return f"table {name} has {len(t[name])} values for {want} targets"
        if v.attr("kind") == "classifier" and ("labels" not in t or (not v.attr("binary") and "scored" not in t)):
            return "classifier tables are missing"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        n = v.input(0).shape[0]
        nt = int(v.attr("n_targets"))
        if v.attr("kind") == "classifier":
            return [OutInfo(INT64, (n,)), OutInfo(FLOAT32, (n, nt))]
        from ..ir.dtypes import dtype_by_name

        return [OutInfo(dtype_by_name(v.attr("out_dtype")), (n, nt))]

    def workspace(self, v: NodeView) -> list[tuple]:
        return [(FLOAT64, ROW_BLOCK * int(v.attr("n_targets")))]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        nf = int(x.shape[1])
        nt = int(v.attr("n_targets"))
        n_trees = int(v.attr("n_trees"))
        agg = int(v.attr("aggregate"))
        post = int(v.attr("post_transform"))
        canonical = bool(v.attr("canonical"))
        single = v.attr("leaves") == "single"
        thr_t = "double" if x.dtype == FLOAT64 else "float"
        rows = e.dim(x.shape[0])
        p = {name: self._in(e, name) for name in FLAT_INPUTS if self._has(v, name)}
        acc = e.ws(0)
        L = LANES
        # one step of a lane: node index n_ -> its child
        if canonical:
            stride, at = (4, 3) if thr_t == "float" else (6, 4)
            step = (f"{{ const std::int32_t* q_ = packed + {stride} * nd[l]; const int k_ = q_[0];\n"
                    f"  {thr_t} t_; std::memcpy(&t_, q_ + {at}, sizeof(t_));\n"
                    f"  const {thr_t} v_ = static_cast<{thr_t}>(xr[k_ >> 1]);\n"
                    f"  const int c_ = int(!(v_ <= t_)) ^ ((k_ & 1) & int(v_ != v_));\n"
                    f"  nd[l] = q_[1 + c_]; }}")
        else:
            step = (f"{{ const int n_ = nd[l]; const int k_ = fk[n_]; const {thr_t} v_ = static_cast<{thr_t}>(xr[k_ >> 1]);\n"
                    f"  const {thr_t} t_ = thr[n_]; bool r_;\n"
                    f"  switch (mode[n_]) {{ case 0: r_ = v_ <= t_; break; case 1: r_ = v_ < t_; break;\n"
                    f"    case 2: r_ = v_ >= t_; break; case 3: r_ = v_ > t_; break; case 4: r_ = v_ == t_; break;\n"
                    f"    case 5: r_ = v_ != t_; break;\n"
                    f"    default: r_ = false; for (int m_ = mstart[n_]; m_ < mstart[n_ + 1]; ++m_) r_ = r_ || v_ == mvals[m_]; }}\n"
                    f"  if ((k_ & 1) && v_ != v_) r_ = true;\n"
                    f"  nd[l] = child[2 * n_ + (r_ ? 0 : 1)]; }}")
        # accumulation of one leaf
        if agg in (0, 1):
            combine = "acc[{t}] += {w};"
        elif agg == 2:
            combine = "acc[{t}] = ({w} < acc[{t}]) ? double({w}) : acc[{t}];"
        else:
            combine = "acc[{t}] = ({w} > acc[{t}]) ? double({w}) : acc[{t}];"
        if single:
            tgt = "lt[leaf_]" if nt > 1 else "0"
            add = combine.format(t=tgt, w="lw[leaf_]")
        else:
            add = ("for (int q_ = lstart[leaf_]; q_ < lstart[leaf_ + 1]; ++q_) { "
                   + combine.format(t="et[q_]", w="ew[q_]") + " }")
        init = {0: "0.0", 1: "0.0", 2: "std::numeric_limits<double>::infinity()",
                3: "-std::numeric_limits<double>::infinity()"}[agg]
        decls = "\n".join(f"const {self._ctype(name, thr_t, v)}* {name} = {ptr};" for name, ptr in p.items())
        # rows go in blocks of ROW_BLOCK: a group of trees is walked for every row of the block
        # while its nodes are in L1, then the next group; one accumulator row per event
        lines = [
            "{",
            ML_HELPERS,
            decls,
            f"const {e.ctype(x.dtype)}* xin = {e.inp(0)};",
            f"for (std::int64_t r0 = 0; r0 < {rows}; r0 += {ROW_BLOCK}) {{",
            f"  const std::int64_t nb_ = std::min<std::int64_t>({ROW_BLOCK}, {rows} - r0);",
            f"  for (std::int64_t q = 0; q < nb_ * {nt}; ++q) {acc}[q] = {init};",
            f"  for (int g = 0; g < {-(-n_trees // L)}; ++g) {{",
            f"    const int lanes_ = std::min({L}, {n_trees} - g * {L});",
            "    for (std::int64_t rb = 0; rb < nb_; ++rb) {",
            f"      const {e.ctype(x.dtype)}* xr = xin + (r0 + rb) * {nf};",
            f"      double* acc = {acc} + rb * {nt};",
            f"      int nd[{L}];",
            f"      for (int l = 0; l < {L}; ++l) nd[l] = roots[g * {L} + l];",
            "      for (int d = 0; d < gdepth[g]; ++d) {",
            f"        for (int l = 0; l < {L}; ++l) {step}",
            "      }",
            "      for (int l = 0; l < lanes_; ++l) { const int leaf_ = nd[l]; " + add + " }",
            "    }",
            "  }",
            "  for (std::int64_t rb = 0; rb < nb_; ++rb) {",
            "  const std::int64_t r = r0 + rb;",
            f"  double* acc = {acc} + rb * {nt};",
        ]
        if agg in (2, 3):
            lines.append(f"  for (int t = 0; t < {nt}; ++t) if (std::isinf(acc[t]) && "
                         f"(acc[t] > 0) == {'true' if agg == 2 else 'false'}) acc[t] = 0.0;")
        if agg == 0:
            lines.append(f"  for (int t = 0; t < {nt}; ++t) acc[t] /= {float(n_trees)!r};")
        if v.attr("kind") == "classifier":
            lines += self._classifier_tail(v, e, nt, post)
        else:
            if "base" in p:
                lines.append(f"  for (int t = 0; t < {nt}; ++t) acc[t] += base[t];")
            lines.append(_post_code(post, nt, "acc"))
            lines.append(f"  for (int t = 0; t < {nt}; ++t) {e.out(0)}[r * {nt} + t] = "
                         f"static_cast<{e.ctype(e.out_info(0).dtype)}>(acc[t]);")
        lines.append("}")
        lines.append("}")
        lines.append("}")
        return "\n".join(lines)

    @staticmethod
    def _ctype(name: str, thr_t: str, v: NodeView) -> str:
        if name in ("thr", "mvals"):
            return thr_t
        if name in ("lw", "ew"):
            i = 1 + FLAT_INPUTS.index(name)
            return "double" if v.input(i).dtype == FLOAT64 else "float"
        if name == "base":
            return "double"
        if name == "labels":
            return "std::int64_t"
        return "std::int32_t"

    def _classifier_tail(self, v: NodeView, e, k: int, post: int) -> list[str]:
        label, score = e.out(0), e.out(1)
        out = []
        if v.attr("binary"):
            base = " + base[0]" if self._has(v, "base") else ""
            out.append(f"  const double s_ = acc[0]{base};")
            if v.attr("all_positive"):
                out.append(f"  {label}[r] = labels[s_ > 0.5 ? 1 : 0];")
            else:
                out.append(f"  {label}[r] = labels[s_ > 0.0 ? 1 : 0];")
            if post == _POST["LOGISTIC"]:
                out.append(f"  {score}[2 * r] = float(sofie_ml_logistic(-s_)); "
                           f"{score}[2 * r + 1] = float(sofie_ml_logistic(s_));")
            elif v.attr("all_positive"):
                out.append(f"  {score}[2 * r] = float(1.0 - s_); {score}[2 * r + 1] = float(s_);")
            else:
                out.append(f"  {score}[2 * r] = float(-s_); {score}[2 * r + 1] = float(s_);")
            return out
        if self._has(v, "base"):
            out.append(f"  for (int t = 0; t < {k}; ++t) acc[t] += base[t];")
        out.append("  { int best_ = -1; double bv_ = 0.0;")
        out.append(f"    for (int t = 0; t < {k}; ++t) if (scored[t] && (best_ < 0 || acc[t] > bv_)) {{ best_ = t; bv_ = acc[t]; }}")
        out.append(f"    {label}[r] = labels[best_ < 0 ? 0 : best_]; }}")
        out.append(_post_code(post, k, "acc"))
        out.append(f"  for (int t = 0; t < {k}; ++t) {score}[r * {k} + t] = float(acc[t]);")
        return out


def _post_code(post: int, n: int, a: str) -> str:
    """C++ applying a post_transform in place to ``a[0..n)`` (doubles)."""
    if post == 0:
        return ""
    if post == 2:
        return f"  for (int t = 0; t < {n}; ++t) {a}[t] = sofie_ml_logistic({a}[t]);"
    if post == 4:
        return f"  for (int t = 0; t < {n}; ++t) {a}[t] = sofie_ml_probit({a}[t]);"
    if post == 1:
        return (f"  {{ double m_ = {a}[0]; for (int t = 1; t < {n}; ++t) m_ = std::max(m_, {a}[t]);\n"
                f"    double s_ = 0.0; for (int t = 0; t < {n}; ++t) {{ {a}[t] = std::exp({a}[t] - m_); s_ += {a}[t]; }}\n"
                f"    for (int t = 0; t < {n}; ++t) {a}[t] /= s_; }}")
    # SOFTMAX_ZERO: values within 1e-7 of zero stay (scaled) zero and do not count in the sum
    return (f"  {{ double m_ = {a}[0]; for (int t = 1; t < {n}; ++t) m_ = std::max(m_, {a}[t]);\n"
            f"    const double e_ = std::exp(-m_); double s_ = 0.0;\n"
            f"    for (int t = 0; t < {n}; ++t) {{ if ({a}[t] > 1e-7 || {a}[t] < -1e-7) {{ {a}[t] = std::exp({a}[t] - m_); s_ += {a}[t]; }}"
            f" else {a}[t] *= e_; }}\n"
            f"    if (s_ == 0.0) {{ for (int t = 0; t < {n}; ++t) {a}[t] = 0.5; }} else {{ for (int t = 0; t < {n}; ++t) {a}[t] /= s_; }} }}")


#: C++ helpers of the post transforms, local lambdas of the node's block (the probit uses the
#: same erf-inverse approximation as onnxruntime and onnx.reference, so results agree)
ML_HELPERS = r"""
auto sofie_ml_logistic = [](double v) {
  const double e = 1.0 / (1.0 + std::exp(-std::fabs(v)));
  return v < 0 ? 1.0 - e : e;
};
auto sofie_ml_probit = [](double val) {  // in float, as onnxruntime computes it
  float x = float(val) * 2.0f - 1.0f;
  const float sgn = x < 0 ? -1.0f : 1.0f;
  x = (1.0f - x) * (1.0f + x);
  if (x == 0) return 0.0;
  const float lg = std::log(x);
  const float v = 2.0f / (3.14159265358979323846f * 0.147f) + 0.5f * lg;
  const float v2 = 1.0f / 0.147f * lg;
  const float v3 = -v + std::sqrt(v * v - v2);
  return double(1.41421356f * sgn * std::sqrt(v3));
};
(void)sofie_ml_logistic; (void)sofie_ml_probit;
"""


# -- the small helpers --------------------------------------------------------------------------


@register
class Binarizer(Operator):
    """ai.onnx.ml Binarizer: 1 where x > threshold, else 0 (same type)."""

    op_type = "Binarizer"
    domain = "ai.onnx.ml"
    dtypes = ("float32", "float64", "int32", "int64")
    inplace_ok = inplace_repeated_ok = True

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(v.input(0).dtype, v.input(0).shape)]

    def emit(self, v: NodeView, e) -> str:
        dt = v.input(0).dtype
        t = e.lit(float(v.attr("threshold", 0.0)), FLOAT64)
        one, zero = e.lit(1, dt), e.lit(0, dt)
        return e.broadcast(0, [0], lambda a: f"(static_cast<double>({a[0]}) > {t} ? {one} : {zero})")


@register
class ArrayFeatureExtractor(Operator):
    """ai.onnx.ml ArrayFeatureExtractor: X[..., indices] (indices flattened; a 1-D X gives one row)."""

    op_type = "ArrayFeatureExtractor"
    domain = "ai.onnx.ml"

    def check(self, v: NodeView) -> str | None:
        if v.input(1).dtype != INT64:
            return "indices must be int64"
        if v.input(0).rank < 1:
            return "X must have at least one dimension"
        return None

    def infer(self, v: NodeView) -> list[OutInfo]:
        x = v.input(0)
        k = v.input(1).size
        shape = (1, k) if x.rank == 1 else (*x.shape[:-1], k)
        return [OutInfo(x.dtype, shape)]

    def emit(self, v: NodeView, e) -> str:
        x = v.input(0)
        last = e.dim(x.shape[-1])
        k = e.size_in(1)
        rows = e.dim(x.size // x.shape[-1]) if x.rank > 1 else "1"
        idx, src, dst = e.inp(1), e.inp(0), e.out(0)
        return (f"for (std::int64_t j = 0; j < {k}; ++j) if ({idx}[j] < 0 || {idx}[j] >= {last}) "
                f"{{ {e.fail('an index is out of range of the last dimension')} }}\n"
                f"for (std::int64_t r = 0; r < {rows}; ++r)\n"
                f"  for (std::int64_t j = 0; j < {k}; ++j) {dst}[r * {k} + j] = {src}[r * {last} + {idx}[j]];")


@register
class LabelEncoder(Operator):
    """ai.onnx.ml LabelEncoder for numeric keys and values (int64/float/double tensors; strings refused)."""

    op_type = "LabelEncoder"
    domain = "ai.onnx.ml"
    dtypes = ("float32", "float64", "int64", "int32")

    def _maps(self, v: NodeView):
        keys = next((v.attr(n) for n in ("keys_tensor", "keys_int64s", "keys_floats") if v.attr(n) is not None), None)
        vals = next(((n, v.attr(n)) for n in ("values_tensor", "values_int64s", "values_floats")
                     if v.attr(n) is not None), (None, None))
        return keys, vals

    def check(self, v: NodeView) -> str | None:
        if any(v.attr(n) is not None for n in ("keys_strings", "values_strings")):
            return "string keys or values are not supported (string tensors are out of scope)"
        keys, (_vname, vals) = self._maps(v)
        if keys is None or vals is None:
            return "needs numeric keys and values"
        if len(np.asarray(keys).reshape(-1)) != len(np.asarray(vals).reshape(-1)):
            return "keys and values have different lengths"
        return super().check(v)

    def _out_dtype(self, v: NodeView):
        _, (vname, vals) = self._maps(v)
        if vname == "values_tensor":
            return dtype_from_numpy(np.asarray(vals).dtype)
        return INT64 if vname == "values_int64s" else FLOAT32

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(self._out_dtype(v), v.input(0).shape)]

    def emit(self, v: NodeView, e) -> str:
        keys, (vname, vals) = self._maps(v)
        keys = np.asarray(keys).reshape(-1)
        vals = np.asarray(vals).reshape(-1)
        odt = self._out_dtype(v)
        if vname == "values_tensor":
            d = v.attr("default_tensor")
            default = np.asarray(d).reshape(-1)[0] if d is not None else 0
        elif vname == "values_int64s":
            default = v.attr("default_int64", -1)
        else:
            default = v.attr("default_float", -0.0)
        idt = v.input(0).dtype
        # a small table: one comparison per key (label maps of BDT pipelines have a few entries);
        # a NaN key matches NaN inputs, as in onnxruntime
        cases = []
        for k, val in zip(keys, vals):
            kf = float(k)
            cond = "(a_ != a_)" if math.isnan(kf) else f"(a_ == {e.lit(k.item(), idt)})"
            cases.append(f"if {cond} {{ o_ = {e.lit(val.item(), odt)}; }}")
        body = " else ".join(cases)
        x, y, n = e.inp(0), e.out(0), e.size_in(0)
        return (f"for (std::int64_t i = 0; i < {n}; ++i) {{ const auto a_ = {x}[i]; "
                f"{e.ctype(odt)} o_ = {e.lit(default, odt)};\n  {body}\n  {y}[i] = o_; }}")


@register
class ZipMap(Operator):
    """ai.onnx.ml ZipMap, as a plain tensor: the output is the probability matrix itself (the
    class labels are the classifier's ``classlabels``); sequences of maps are not built."""

    op_type = "ZipMap"
    domain = "ai.onnx.ml"
    dtypes = ("float32",)
    view_of_input = True

    def check(self, v: NodeView) -> str | None:
        if v.input(0).rank != 2:
            return "ZipMap's input must be a matrix [N, classes]"
        return super().check(v)

    def infer(self, v: NodeView) -> list[OutInfo]:
        return [OutInfo(v.input(0).dtype, v.input(0).shape)]

    def emit(self, v: NodeView, e) -> str:
        from .shape import copy_code

        return copy_code(v, e)
