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
   const Signature *s = find(p, arrays);
   if (!s)
      Py_RETURN_NONE;
   std::int64_t sym[kMaxSym + 1];
   std::memcpy(sym, s->sym.data(), s->sym.size() * sizeof(std::int64_t));
   void *outp[kMaxIO];
   PyObject *out = args[1];
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

// new_plan(run address, session address, input type numbers, output type numbers, error type)
//   -> (capsule, plan address)
inline PyObject *new_plan(PyObject *, PyObject *const *args, Py_ssize_t nargs)
{
   if (nargs != 5 || !PyTuple_Check(args[2]) || !PyTuple_Check(args[3]) || PyTuple_GET_SIZE(args[2]) > kMaxIO
       || PyTuple_GET_SIZE(args[3]) > kMaxIO) {
      PyErr_SetString(PyExc_ValueError, "sofie_pycall.new_plan: bad arguments");
      return nullptr;
   }
   auto *p = new (std::nothrow) Plan;
   if (!p)
      return PyErr_NoMemory();
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
