"""Pickling compiled models: what :meth:`sofie_root.Model.__reduce__` ships, and how it is rebuilt.

A compiled model holds C++ state (a cling declaration or a loaded shared library, a Session,
ctypes pointers) that cannot cross a process boundary. What crosses it is the model's IR:
exactly the JSON document and weight blob a ``.root`` file stores (:func:`writer.build_document`),
checked on arrival like a file (checksums, shape re-inference), and compiled again on the
receiving side with the same backend. The optimisation passes already ran before pickling, so
the rebuilt model runs none and its generated code, namespace and content hash are the sender's.

Rebuilt models are cached per process by the SHA-256 of what was shipped: a worker that
receives the same model with every task (``multiprocessing``, ``dask.distributed``) compiles it
once and hands every later copy the same :class:`~sofie_root.Model` object. The cache keeps the
last :data:`CACHE_SIZE` models alive (:func:`clear_cache` empties it).

A model that uses operators from :func:`sofie_root.register_operator` compiles only where the
same operators are registered (their C++ lives in Python code, not in the model; on a Dask
cluster, ``client.run(register_my_ops)`` or a worker plugin does it). Otherwise unpickling gives
an :class:`Unrebuilt` placeholder whose first use raises the
:class:`~sofie_root.UnsupportedOperatorError` naming them: an error raised while unpickling would
kill a ``multiprocessing`` pipe or a Dask worker's connection instead of failing the task. A model specialised
on input values (:class:`~sofie_root.model.SpecializingModel`) ships its ONNX model instead and
compiles its variants at their first call on the receiving side.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

from sofie_root.errors import SofieError

#: payload layout version (checked on arrival; bumped when the tuple below changes)
PAYLOAD_VERSION = 1
#: restored models kept alive per process (the most recently used ones)
CACHE_SIZE = 8

_lock = threading.Lock()
_cache: OrderedDict[tuple, Any] = OrderedDict()
#: what this process did (for tests and diagnostics): models compiled from pickles, cache hits
stats = {"compiled": 0, "cache_hits": 0}


def model_payload(model) -> tuple:
    """What a :class:`~sofie_root.Model` pickles as: ``("model", version, backend, text, blob)``,
    ``text`` and ``blob`` being the model's ``.root`` document and weights."""
    from .writer import build_document, default_name

    text, blob = build_document(model.graph, model._generated, default_name(model.graph), model.hash,
                                model.column_hints)
    return ("model", PAYLOAD_VERSION, model.backend, text, blob)


def specializing_payload(model) -> tuple:
    """What a :class:`~sofie_root.model.SpecializingModel` pickles as: its ONNX model and options."""
    passes = None if model._passes is None else list(model._passes)
    shapes = None if model._input_shapes is None else {k: list(v) for k, v in dict(model._input_shapes).items()}
    return ("specializing", PAYLOAD_VERSION, model.backend, model._onnx.SerializeToString(),
            (model._label, shapes, list(model._bound), passes))


def restore(payload: tuple):
    """The model a payload describes: compiled now, or taken from this process's cache."""
    if not isinstance(payload, tuple) or len(payload) != 5 or payload[1] != PAYLOAD_VERSION:
        return Unrebuilt(payload, SofieError("cannot unpickle this sofie_root model: it was pickled by an "
                                             "incompatible sofie_root version (payload layout differs)"))
    kind, _, backend, body, extra = payload
    digest = hashlib.sha256(body if isinstance(body, bytes) else body.encode())
    digest.update(extra if isinstance(extra, bytes) else repr(extra).encode())
    key = (kind, backend, digest.hexdigest())
    with _lock:
        model = _cache.get(key)
        if model is not None:
            _cache.move_to_end(key)
            stats["cache_hits"] += 1
            return model
    try:
        model = _build(kind, backend, body, extra)
    except SofieError as e:
        # raising here would kill the receiving end of a pipe or a Dask worker's connection
        # (the task is lost and the caller waits forever); the error surfaces at the first use
        return Unrebuilt(payload, e)
    with _lock:
        model = _cache.setdefault(key, model)  # another thread may have built it meanwhile
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        stats["compiled"] += 1
    return model


class Unrebuilt:
    """Stands for a model that could not be compiled where it was unpickled (typically: a
    user-defined operator not registered in this process). Using it in any way raises that
    error; pickled again, it ships the original model."""

    def __init__(self, payload: tuple, error: SofieError):
        self._payload = payload
        self._error = error

    def __reduce__(self):
        return (restore, (self._payload,))

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise self._error

    def __call__(self, *args, **kwargs):
        raise self._error

    def __repr__(self) -> str:
        return f"<sofie_root model that could not be rebuilt after unpickling: {self._error}>"


def clear_cache() -> None:
    """Forget the models restored so far (they stay alive while referenced elsewhere)."""
    with _lock:
        _cache.clear()


def _build(kind: str, backend: str, body, extra):
    from sofie_root.model import Model, SpecializingModel

    if kind == "specializing":
        import onnx

        label, shapes, bound, passes = extra
        return SpecializingModel(onnx.load_from_string(body), label, shapes, bound, passes, backend=backend)
    if kind != "model":
        raise SofieError(f"cannot unpickle a sofie_root model of kind {kind!r}")
    from sofie_root.ops.custom import graph_fingerprint

    from .reader import _parse, decode

    where = "<pickled model>"
    doc = _parse(body, where)
    doc.pop("\0stored_version")
    blob = bytes(extra)
    if len(blob) != doc["blob"]["nbytes"] or hashlib.sha256(blob).hexdigest() != doc["blob"]["sha256"]:
        raise SofieError(f"{where}: the weights do not match the model's checksum (corrupt pickle)")
    graph = decode(doc, blob, where)
    model = Model(graph, passes=[], backend=backend)
    expected = doc["model"]["model_hash"]
    # the IR round trip is exact, so the rebuilt model has the sender's content hash, except with
    # user-defined operators: their fingerprint is part of the hash and holds process-specific ids
    # of the registered Python functions
    if model.hash != expected and not graph_fingerprint(graph):
        raise SofieError(f"{where}: internal error: the model rebuilt here differs from the pickled one "
                         f"(content hash {model.hash} != {expected})")
    model.column_hints = dict(doc["model"].get("column_hints") or {}) or None
    return model
