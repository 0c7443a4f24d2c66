// The quick way from Python into a compiled model's `run` (see sofie_root/jit/pycall.py).
//
// A call from Python through cppyy or ctypes costs several microseconds: argument conversion,
// numpy's `ctypes` attribute, a Python-level signature lookup and `np.empty`. Here the whole
// quick path of Model.infer -- input type/dtype/contiguity checks, the lookup of the input
// shapes among the signatures Python has already checked, allocation (or checks) of the
// outputs, and the call itself -- is one CPython builtin function (METH_FASTCALL) compiled by
// cling, with the model's `Plan` as its `self`. Anything it does not handle (a new signature,
// another dtype, a view as `out`, ...) returns None, and Python takes its general path, which
// explains what is wrong. The GIL is released during `run`, as ctypes and cppyy do; a per-model
// mutex keeps one call at a time on the Session (the general path takes it too, through
// `locked_run`).
//
// Outputs sized by the data (NonZero, NonMaxSuppression, Unique, Compress with a run-time
// condition) are allocated at their upper bound (the signature's output shapes); `run` writes
// the actual sizes after the input symbols in `sym`, and the dims of those outputs are
// polynomials over `sym` (`DynDim`), evaluated after the call: an output filled to its bound is
// returned as is, one filled to at least half of it as a C-contiguous view of its first
// elements (what Python's general path does), a smaller one as a copy (which frees the bound).

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#ifndef NPY_NO_DEPRECATED_API
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#endif
#define PY_ARRAY_UNIQUE_SYMBOL SOFIE_PYCALL_PyArray_API
#include <numpy/arrayobject.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

namespace sofie_pycall {

using run_fn = int (*)(void *, std::int64_t *, const void *const *, void *const *, char *, std::size_t);

//: inputs, outputs and symbols a quick call handles (more: the general path)
constexpr int kMaxIO = 64;
constexpr int kMaxSym = 64;
constexpr const char *kCapsule = "sofie_pycall.Plan";

// one dim of an output sized by the data: sum of coef * prod(sym[idx]) over its terms
struct Term {
   std::int64_t coef = 0;
   std::vector<int> idx;
};
struct DynDim {
   int out = 0, dim = 0;
   std::vector<Term> terms;
};

struct Signature {
   std::vector<int> in_ranks;
   std::vector<npy_intp> in_dims;  // the dims of all inputs, one after the other
   std::vector<std::int64_t> sym;  // what `run` is given
   std::vector<int> out_ranks;
   std::vector<npy_intp> out_dims;
};

struct Plan {
   run_fn run = nullptr;
   void *session = nullptr;
   std::mutex mutex;
   int n_in = 0, n_out = 0;
   std::vector<int> in_types, out_types;    // numpy type numbers
   std::vector<PyArray_Descr *> out_descr;  // owned references
   std::vector<Signature> sigs;
   std::vector<DynDim> dyn;   // dims of outputs sized by the data, in output order
   std::size_t last = 0;      // the signature of the previous call, tried first
   PyObject *error = nullptr; // SofieError (owned)
   char err[1024] = "";
};

inline void destroy_plan(PyObject *cap)
{
   auto *p = static_cast<Plan *>(PyCapsule_GetPointer(cap, kCapsule));
   if (!p)
      return;
   for (PyArray_Descr *d : p->out_descr)
      Py_XDECREF(d);
   Py_XDECREF(p->error);
   delete p;
}

inline bool same_type(PyArrayObject *a, int want)
{
   const int got = PyArray_DESCR(a)->type_num;
   return (got == want || PyArray_EquivTypenums(got, want)) && PyArray_ISNOTSWAPPED(a);
}

inline const Signature *find(Plan *p, PyObject *const *arrays)
{
   const std::size_t n = p->sigs.size();
   for (std::size_t t = 0; t < n; ++t) {
      const std::size_t k = (p->last + t) % n;
      const Signature &s = p->sigs[k];
      const npy_intp *d = s.in_dims.data();
      bool ok = true;
      for (int i = 0; i < p->n_in && ok; ++i) {
         auto *a = reinterpret_cast<PyArrayObject *>(arrays[i]);
         const int r = s.in_ranks[i];
         ok = PyArray_NDIM(a) == r && std::memcmp(PyArray_DIMS(a), d, r * sizeof(npy_intp)) == 0;
         d += r;
      }
      if (ok) {
         p->last = k;
         return &s;
      }
   }
   return nullptr;
}

// The outputs sized by the data cut to the sizes `run` wrote in `sym` (see the top of this file).
// The bounds are the dims of the arrays `quick` allocated, not its Signature's: another thread
// may add or clear signatures (reallocating `sigs`) while the GIL is released during `run`.
inline bool trim(const Plan *p, const std::int64_t *sym, PyObject *result)
{
   std::size_t k = 0;
   for (int j = 0; j < p->n_out; ++j) {
      if (k == p->dyn.size() || p->dyn[k].out != j)
         continue;
      auto *full = reinterpret_cast<PyArrayObject *>(PyList_GET_ITEM(result, j));
      const int r = PyArray_NDIM(full);
      const npy_intp *bound = PyArray_DIMS(full);
      npy_intp dims[NPY_MAXDIMS];
      std::memcpy(dims, bound, r * sizeof(npy_intp));
      bool same = true;
      for (; k < p->dyn.size() && p->dyn[k].out == j; ++k) {
         if (p->dyn[k].dim >= r) {
            PyErr_Format(PyExc_ValueError, "sofie_pycall: output %d has no dimension %d", j, p->dyn[k].dim);
            return false;
         }
         std::int64_t v = 0;
         for (const Term &t : p->dyn[k].terms) {
            std::int64_t m = t.coef;
            for (int i : t.idx)
               m *= sym[i];
            v += m;
         }
         if (v < 0 || v > bound[p->dyn[k].dim]) {
            PyErr_Format(p->error, "inference failed: output %d has %lld elements along dimension %d, more than "
                         "its bound %lld", j, static_cast<long long>(v), p->dyn[k].dim,
                         static_cast<long long>(bound[p->dyn[k].dim]));
            return false;
         }
         same = same && v == bound[p->dyn[k].dim];
         dims[p->dyn[k].dim] = static_cast<npy_intp>(v);
      }
      if (same)
         continue;
      const npy_intp n = PyArray_MultiplyList(dims, r);
      PyArray_Descr *descr = p->out_descr[j];
      PyObject *cut;
      Py_INCREF(descr);  // both constructors steal it
      if (2 * n >= PyArray_SIZE(full)) {
         cut = PyArray_NewFromDescr(&PyArray_Type, descr, r, dims, nullptr, PyArray_DATA(full),
                                    NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_WRITEABLE, nullptr);
         if (cut) {
            Py_INCREF(full);
            if (PyArray_SetBaseObject(reinterpret_cast<PyArrayObject *>(cut), reinterpret_cast<PyObject *>(full))
                < 0) {
               Py_DECREF(cut);
               return false;
            }
         }
      } else {
         cut = PyArray_Empty(r, dims, descr, 0);
         if (cut && n)
            std::memcpy(PyArray_DATA(reinterpret_cast<PyArrayObject *>(cut)), PyArray_DATA(full),
                        static_cast<std::size_t>(n) * PyArray_ITEMSIZE(full));
      }
      if (!cut)
         return false;
      PyList_SET_ITEM(result, j, cut);  // does not release the item it replaces:
      Py_DECREF(full);                  // the view holds its own reference
   }
   return true;
}

// quick(arrays: tuple, out: list | tuple | None) -> list of outputs, or None (take the general path)
inline PyObject *quick(PyObject *cap, PyObject *const *args, Py_ssize_t nargs)
{
   auto *p = static_cast<Plan *>(PyCapsule_GetPointer(cap, kCapsule));
   if (!p || nargs != 2 || !PyTuple_CheckExact(args[0]) || PyTuple_GET_SIZE(args[0]) != p->n_in)
      Py_RETURN_NONE;
   PyObject *const *arrays = &PyTuple_GET_ITEM(args[0], 0);
   const void *in[kMaxIO];
   const int need = NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED;
   for (int i = 0; i < p->n_in; ++i) {
      if (!PyArray_CheckExact(arrays[i]))
         Py_RETURN_NONE;
      auto *a = reinterpret_cast<PyArrayObject *>(arrays[i]);
      if ((PyArray_FLAGS(a) & need) != need || !same_type(a, p->in_types[i]))
         Py_RETURN_NONE;
      in[i] = PyArray_DATA(a);
   }
   // `s` points into p->sigs: used only while this thread holds the GIL (not after `run`)
   const Signature *s = find(p, arrays);
   if (!s)
      Py_RETURN_NONE;
   std::int64_t sym[2 * kMaxSym + 1] = {};
   std::memcpy(sym, s->sym.data(), s->sym.size() * sizeof(std::int64_t));
   void *outp[kMaxIO];
   PyObject *out = args[1];
   if (out != Py_None && !p->dyn.empty())
      Py_RETURN_NONE;  // out= is refused for such models, by Python
   PyObject *result = PyList_New(p->n_out);
   if (!result)
      return nullptr;
   const npy_intp *d = s->out_dims.data();
   if (out == Py_None) {
      for (int j = 0; j < p->n_out; ++j) {
         Py_INCREF(p->out_descr[j]);  // PyArray_Empty steals it
         PyObject *o = PyArray_Empty(s->out_ranks[j], const_cast<npy_intp *>(d), p->out_descr[j], 0);
         if (!o) {
            Py_DECREF(result);
            return nullptr;
         }
         PyList_SET_ITEM(result, j, o);
         outp[j] = PyArray_DATA(reinterpret_cast<PyArrayObject *>(o));
         d += s->out_ranks[j];
      }
   } else {
      // only arrays that own their memory (no base: they cannot overlap an input or each other
      // unless they are the same object) of the exact shape and dtype; the rest is checked, and
      // explained, by Python
      const bool seq = PyList_CheckExact(out) || PyTuple_CheckExact(out);
      if (!seq || PySequence_Fast_GET_SIZE(out) != p->n_out) {
         Py_DECREF(result);
         Py_RETURN_NONE;
      }
      PyObject *const *given = PySequence_Fast_ITEMS(out);
      const int want = NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_WRITEABLE;
      for (int j = 0; j < p->n_out; ++j) {
         PyObject *o = given[j];
         bool ok = PyArray_CheckExact(o);
         auto *a = reinterpret_cast<PyArrayObject *>(o);
         const int r = s->out_ranks[j];
         ok = ok && PyArray_BASE(a) == nullptr && (PyArray_FLAGS(a) & want) == want && same_type(a, p->out_types[j])
              && PyArray_NDIM(a) == r && std::memcmp(PyArray_DIMS(a), d, r * sizeof(npy_intp)) == 0;
         for (int i = 0; ok && i < p->n_in; ++i)
            ok = arrays[i] != o;
         for (int i = 0; ok && i < j; ++i)
            ok = given[i] != o;
         if (!ok) {
            Py_DECREF(result);
            Py_RETURN_NONE;
         }
         Py_INCREF(o);
         PyList_SET_ITEM(result, j, o);
         outp[j] = PyArray_DATA(a);
         d += r;
      }
   }
   int rc;
   char msg[sizeof(p->err)];
   Py_BEGIN_ALLOW_THREADS
   {
      std::lock_guard<std::mutex> hold(p->mutex);
      rc = p->run(p->session, sym, in, outp, p->err, sizeof(p->err));
      if (rc) {
         std::memcpy(msg, p->err, sizeof(msg));
         msg[sizeof(msg) - 1] = 0;
      }
   }
   Py_END_ALLOW_THREADS
   if (rc) {
      Py_DECREF(result);
      PyErr_Format(p->error, "inference failed: %s", msg);
      return nullptr;
   }
   if (!p->dyn.empty() && !trim(p, sym, result)) {
      Py_DECREF(result);
      return nullptr;
   }
   return result;
}

inline bool read_dims(PyObject *shapes, std::vector<int> &ranks, std::vector<npy_intp> &dims)
{
   if (!PyTuple_Check(shapes))
      return false;
   for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(shapes); ++i) {
      PyObject *shape = PyTuple_GET_ITEM(shapes, i);
      if (!PyTuple_Check(shape))
         return false;
      ranks.push_back(static_cast<int>(PyTuple_GET_SIZE(shape)));
      for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(shape); ++k) {
         const long long v = PyLong_AsLongLong(PyTuple_GET_ITEM(shape, k));
         if (v == -1 && PyErr_Occurred())
            return false;
         dims.push_back(static_cast<npy_intp>(v));
      }
   }
   return true;
}

// add(input shapes, symbol values, output shapes): a signature Python has checked
inline PyObject *add(PyObject *cap, PyObject *const *args, Py_ssize_t nargs)
{
   auto *p = static_cast<Plan *>(PyCapsule_GetPointer(cap, kCapsule));
   if (!p)
      return nullptr;
   Signature s;
   if (nargs != 3 || !read_dims(args[0], s.in_ranks, s.in_dims) || !read_dims(args[2], s.out_ranks, s.out_dims)
       || !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) > kMaxSym
       || static_cast<int>(s.in_ranks.size()) != p->n_in || static_cast<int>(s.out_ranks.size()) != p->n_out) {
      if (!PyErr_Occurred())
         PyErr_SetString(PyExc_ValueError, "sofie_pycall.add(in_shapes, sym, out_shapes): bad arguments");
      return nullptr;
   }
   for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(args[1]); ++k) {
      const long long v = PyLong_AsLongLong(PyTuple_GET_ITEM(args[1], k));
      if (v == -1 && PyErr_Occurred())
         return nullptr;
      s.sym.push_back(v);
   }
   if (s.sym.empty())
      s.sym.push_back(0);  // run is always given a valid pointer
   p->sigs.push_back(std::move(s));
   Py_RETURN_NONE;
}

// clear(): forget every signature
inline PyObject *clear(PyObject *cap, PyObject *const *, Py_ssize_t)
{
   auto *p = static_cast<Plan *>(PyCapsule_GetPointer(cap, kCapsule));
   if (!p)
      return nullptr;
   p->sigs.clear();
   p->last = 0;
   Py_RETURN_NONE;
}

// The general path's way in: the model's run under the same mutex as quick calls
// (called through ctypes, which has released the GIL).
inline int locked_run(void *plan, std::int64_t *sym, const void *const *in, void *const *out, char *err,
                                 std::size_t errlen)
{
   auto *p = static_cast<Plan *>(plan);
   std::lock_guard<std::mutex> hold(p->mutex);
   return p->run(p->session, sym, in, out, err, errlen);
}

// The dims of outputs sized by the data: a tuple of (output, dim, terms), terms a tuple of
// (coef, *symbol indices), in output order; indices below n_sym_all.
inline bool read_dyn(PyObject *dyn, int n_out, int n_sym_all, std::vector<DynDim> &to)
{
   if (!PyTuple_Check(dyn))
      return false;
   for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(dyn); ++k) {
      PyObject *e = PyTuple_GET_ITEM(dyn, k);
      if (!PyTuple_Check(e) || PyTuple_GET_SIZE(e) != 3 || !PyTuple_Check(PyTuple_GET_ITEM(e, 2)))
         return false;
      DynDim d;
      d.out = static_cast<int>(PyLong_AsLong(PyTuple_GET_ITEM(e, 0)));
      d.dim = static_cast<int>(PyLong_AsLong(PyTuple_GET_ITEM(e, 1)));
      if (PyErr_Occurred() || d.out < 0 || d.out >= n_out || d.dim < 0 || d.dim >= NPY_MAXDIMS
          || (!to.empty() && to.back().out > d.out))
         return false;
      PyObject *terms = PyTuple_GET_ITEM(e, 2);
      for (Py_ssize_t t = 0; t < PyTuple_GET_SIZE(terms); ++t) {
         PyObject *term = PyTuple_GET_ITEM(terms, t);
         if (!PyTuple_Check(term) || PyTuple_GET_SIZE(term) < 1)
            return false;
         Term m;
         m.coef = PyLong_AsLongLong(PyTuple_GET_ITEM(term, 0));
         for (Py_ssize_t i = 1; i < PyTuple_GET_SIZE(term); ++i) {
            const long v = PyLong_AsLong(PyTuple_GET_ITEM(term, i));
            if (v < 0 || v >= n_sym_all)
               return false;
            m.idx.push_back(static_cast<int>(v));
         }
         if (PyErr_Occurred())
            return false;
         d.terms.push_back(std::move(m));
      }
      to.push_back(std::move(d));
   }
   return true;
}

// new_plan(run address, session address, input type numbers, output type numbers, error type,
//          number of input and data-dependent symbols, dims of outputs sized by the data)
//   -> (capsule, plan address)
inline PyObject *new_plan(PyObject *, PyObject *const *args, Py_ssize_t nargs)
{
   if (nargs != 7 || !PyTuple_Check(args[2]) || !PyTuple_Check(args[3]) || PyTuple_GET_SIZE(args[2]) > kMaxIO
       || PyTuple_GET_SIZE(args[3]) > kMaxIO) {
      PyErr_SetString(PyExc_ValueError, "sofie_pycall.new_plan: bad arguments");
      return nullptr;
   }
   const long n_sym_all = PyLong_AsLong(args[5]);
   std::vector<DynDim> dyn;
   if (n_sym_all < 0 || n_sym_all > 2 * kMaxSym
       || !read_dyn(args[6], static_cast<int>(PyTuple_GET_SIZE(args[3])), static_cast<int>(n_sym_all), dyn)) {
      if (!PyErr_Occurred())
         PyErr_SetString(PyExc_ValueError, "sofie_pycall.new_plan: bad symbol count or output dims");
      return nullptr;
   }
   auto *p = new (std::nothrow) Plan;
   if (!p)
      return PyErr_NoMemory();
   p->dyn = std::move(dyn);
   p->run = reinterpret_cast<run_fn>(PyLong_AsVoidPtr(args[0]));
   p->session = PyLong_AsVoidPtr(args[1]);
   p->n_in = static_cast<int>(PyTuple_GET_SIZE(args[2]));
   p->n_out = static_cast<int>(PyTuple_GET_SIZE(args[3]));
   for (int i = 0; i < p->n_in; ++i)
      p->in_types.push_back(static_cast<int>(PyLong_AsLong(PyTuple_GET_ITEM(args[2], i))));
   for (int j = 0; j < p->n_out; ++j) {
      const int t = static_cast<int>(PyLong_AsLong(PyTuple_GET_ITEM(args[3], j)));
      p->out_types.push_back(t);
      p->out_descr.push_back(PyErr_Occurred() ? nullptr : PyArray_DescrFromType(t));
   }
   Py_INCREF(args[4]);
   p->error = args[4];
   PyObject *cap = PyCapsule_New(p, kCapsule, destroy_plan);
   if (!cap || PyErr_Occurred()) {
      if (cap)
         Py_DECREF(cap);  // runs destroy_plan
      else {
         for (PyArray_Descr *d : p->out_descr)
            Py_XDECREF(d);
         Py_DECREF(p->error);
         delete p;
      }
      return nullptr;
   }
   for (PyArray_Descr *d : p->out_descr)
      if (!d) {
         Py_DECREF(cap);
         return nullptr;
      }
   return Py_BuildValue("(NK)", cap, static_cast<unsigned long long>(reinterpret_cast<std::uintptr_t>(p)));
}

inline int init()
{
   return _import_array() < 0 ? -1 : 0;
}

inline long long address(int which)
{
   switch (which) {
   case 0: return reinterpret_cast<long long>(&new_plan);
   case 1: return reinterpret_cast<long long>(&quick);
   case 2: return reinterpret_cast<long long>(&add);
   case 3: return reinterpret_cast<long long>(&clear);
   default: return reinterpret_cast<long long>(&locked_run);
   }
}

} // namespace sofie_pycall
