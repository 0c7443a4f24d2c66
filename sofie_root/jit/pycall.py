"""The quick way from Python into a compiled model's ``run``: a CPython builtin compiled by cling.

``Model.infer`` on a small model used to spend several microseconds in Python per call (the
cppyy call, ``np.empty``, attribute look-ups for the checks). :func:`make_plan` gives a model
builtin functions written against the CPython and numpy C APIs (``pycall.hxx``): ``quick(arrays,
out)`` checks the inputs (exact numpy arrays, dtype, C-contiguous and aligned), finds their shapes
among the signatures Python has checked (``add``), allocates or checks the outputs, calls ``run``
with the GIL released and cuts the outputs whose size depends on the data (NonZero,
NonMaxSuppression, Unique, ...) to the sizes ``run`` reports; it returns None for anything else,
and ``Model.infer`` then takes its general path. ``locked_run`` is ``run`` under the same
per-model mutex, for that general path (called through ctypes).

The builtins are made with ``PyCFunction_NewEx`` from the addresses cling gives, so a call
costs what a call of a C extension function costs. This needs the CPython headers (``Python.h``
of this interpreter) and numpy's; without them, or with ``SOFIE_ROOT_PYCALL=0``, there is no
plan and ``Model`` uses the cppyy caller (:func:`sofie_root.jit.cling.fast_caller`). Both
backends (cling and native) use it: only the entry point's address differs.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path

from . import cling

log = logging.getLogger("sofie_root")

SOURCE_PATH = Path(__file__).resolve().parent / "pycall.hxx"
_METH_FASTCALL = 0x0080
#: data-dependent symbols a plan handles (pycall.hxx: kMaxSym); more: the general path
MAX_DATA_SYMBOLS = 64
_lock = threading.Lock()
_api: _Api | None = None
_failed = False


class _MethodDef(ctypes.Structure):
    _fields_ = [("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p), ("ml_flags", ctypes.c_int),
                ("ml_doc", ctypes.c_char_p)]


_new_cfunction = ctypes.pythonapi.PyCFunction_NewEx
_new_cfunction.restype = ctypes.py_object
_new_cfunction.argtypes = [ctypes.POINTER(_MethodDef), ctypes.py_object, ctypes.c_void_p]


@dataclass
class _Api:
    defs: dict[str, _MethodDef]  # kept alive: the builtins point into them
    new_plan: object
    locked_run_addr: int


@dataclass
class Plan:
    """A model's quick caller. ``quick(arrays, out)``: list of outputs, or None (general path);
    ``add(in_shapes, sym, out_shapes)``: a checked signature; ``clear()``: forget them all;
    ``run``/``target``: called as ``run(target, sym, in, out, err, errlen)`` by the general path."""

    quick: object
    add: object
    clear: object
    run: object
    target: int
    capsule: object  # owns the C++ Plan


def _headers() -> list[str] | None:
    import numpy as np

    paths = [sysconfig.get_paths().get("include") or "", np.get_include()]
    if not (Path(paths[0]) / "Python.h").is_file() or not (Path(paths[1]) / "numpy" / "arrayobject.h").is_file():
        return None
    return paths


def _load() -> _Api | None:
    """Declare pycall.hxx to cling once per process; None if that is not possible here."""
    global _api, _failed
    with _lock:
        if _api is not None or _failed:
            return _api
        _failed = True  # until it worked
        if os.environ.get("SOFIE_ROOT_PYCALL", "1").strip() == "0":
            return None
        paths = _headers()
        if paths is None:
            log.info("sofie_root: Python.h or the numpy headers are missing; Model.infer calls models through cppyy")
            return None
        ROOT = cling.root()
        for p in paths:
            ROOT.gInterpreter.AddIncludePath(p)
        try:
            cling._declare(ROOT, SOURCE_PATH.read_text(), "the Python call path (pycall.hxx)")
        except Exception as e:  # any failure: the cppyy path still works
            log.info("sofie_root: the quick Python call path is not available (%s)", str(e)[:500])
            return None
        if int(ROOT.sofie_pycall.init()) != 0:
            return None
        addr = [int(ROOT.sofie_pycall.address(k)) for k in range(5)]
        defs = {name: _MethodDef(name.encode(), a, _METH_FASTCALL, None)
                for name, a in zip(("new_plan", "quick", "add", "clear"), addr)}
        new_plan = _new_cfunction(ctypes.byref(defs["new_plan"]), None, None)
        _api = _Api(defs, new_plan, addr[4])
        _failed = False
        return _api


def make_plan(run_addr: int, session: int, in_types: list[int], out_types: list[int], n_sym_all: int = 0,
              dyn: tuple = ()) -> Plan | None:
    """The quick caller of the model whose ``run`` is at ``run_addr`` with Session ``session``;
    ``in_types``/``out_types`` are numpy type numbers (``np.dtype(...).num``). Outputs sized by
    the data: ``n_sym_all`` is the number of input and data-dependent symbols (the length of
    ``sym`` that ``run`` fills) and ``dyn`` the dims of those outputs, ``(output, dim, terms)``
    in output order, each term ``(coef, *symbol indices)``: the dim is ``sum(coef * prod(sym[i]))``
    once ``run`` has written the actual sizes. None when the C API path is not available (see the
    module docstring)."""
    from ..errors import SofieError

    api = _load()
    if api is None:
        return None
    capsule, target = api.new_plan(run_addr, session, tuple(in_types), tuple(out_types), SofieError, n_sym_all,
                                   tuple(dyn))
    make = {name: _new_cfunction(ctypes.byref(api.defs[name]), capsule, None) for name in ("quick", "add", "clear")}
    return Plan(make["quick"], make["add"], make["clear"], cling._RUN(api.locked_run_addr), target, capsule)
