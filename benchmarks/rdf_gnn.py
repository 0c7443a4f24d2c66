"""Per-event cost of a graph network fed from variable-length RVec columns (``variable=True``).

    python benchmarks/rdf_gnn.py [--events 2000] [--reps 7]

A Graph Nets style GraphNetwork (edge, node and global MLPs of 32 hidden units; 4 node, 1 edge and
2 global features) on random graphs of 3-39 nodes and 2 edges per node, built once in C++. Both
loops are in C++ (no RDataFrame, no Python), interleaved, medians over ``--reps``:

- the functor (slot form): length checks, sender/receiver range checks, nodes interleaved from
  4 columns, int -> int64 indices, the result as float (graph score) or RVecF (per-node, n x 8);
- the bare Session on the same events with inputs already in the model's layout and types.

Their ratio is the functor's overhead. The buffer allocations of the functor after all repetitions
are printed too (they stop once the largest event has been seen).
"""

from __future__ import annotations

import argparse
import statistics
import sys

INPUTS = {"nodes": ["pt", "eta", "phi", "d0"], "edges": ["dr"], "senders": ["src"], "receivers": ["dst"],
          "globals": ["gx", "gy"]}
TYPES = {**dict.fromkeys(["pt", "eta", "phi", "d0", "dr"], "ROOT::RVecF"), "src": "ROOT::RVecI", "dst": "ROOT::RVecI",
         "gx": "float", "gy": "float"}

CODE = r"""
namespace sofie_bench_gnn {
struct Event {
   ROOT::RVecF pt, eta, phi, d0, dr;
   ROOT::RVecI src, dst;
   float gx, gy;
   std::vector<float> nodes;        // the model's layout, for the bare Session
   std::vector<std::int64_t> s, r;
};
inline std::vector<Event> events;
inline void make(int n_events)
{
   std::mt19937 gen(1);
   std::uniform_int_distribution<int> size(3, 39);
   std::normal_distribution<float> g;
   for (int e = 0; e < n_events; ++e) {
      Event ev;
      const int n = size(gen), m = 2 * n;
      std::uniform_int_distribution<int> node(0, n - 1);
      for (int i = 0; i < n; ++i) {
         ev.pt.push_back(g(gen)); ev.eta.push_back(g(gen)); ev.phi.push_back(g(gen)); ev.d0.push_back(g(gen));
         for (float x : {ev.pt[i], ev.eta[i], ev.phi[i], ev.d0[i]})
            ev.nodes.push_back(x);
      }
      for (int j = 0; j < m; ++j) {
         ev.dr.push_back(g(gen)); ev.src.push_back(node(gen)); ev.dst.push_back(node(gen));
         ev.s.push_back(ev.src[j]); ev.r.push_back(ev.dst[j]);
      }
      ev.gx = g(gen); ev.gy = g(gen);
      events.push_back(std::move(ev));
   }
}
inline double first(float y) { return y; }
inline double first(const ROOT::RVecF &y) { return y.empty() ? 0. : y[0]; }
template <class F>
double functor_loop(F &f)
{
   double acc = 0;
   const auto t0 = std::chrono::steady_clock::now();
   for (auto &ev : events)
      acc += first(f(0u, ev.pt, ev.eta, ev.phi, ev.d0, ev.dr, ev.src, ev.dst, ev.gx, ev.gy));
   const auto t1 = std::chrono::steady_clock::now();
   if (acc == 1234.5)
      std::puts("");
   return std::chrono::duration<double>(t1 - t0).count() / events.size();
}
template <class S>
double session_loop(std::uintptr_t weights, std::size_t nbytes)
{
   static S session(reinterpret_cast<const void *>(weights), nbytes);
   std::vector<float> o0, o1, o2(1);
   double acc = 0;
   const auto t0 = std::chrono::steady_clock::now();
   for (auto &ev : events) {
      std::int64_t sym[4] = {std::int64_t(ev.pt.size()), std::int64_t(ev.dr.size()), 0, 0};
      const float g[2] = {ev.gx, ev.gy};
      const void *in[5] = {ev.nodes.data(), ev.dr.data(), ev.s.data(), ev.r.data(), g};
      if (o0.size() < 8 * ev.pt.size() + 1) o0.resize(8 * ev.pt.size() + 1);
      if (o1.size() < 8 * ev.dr.size() + 1) o1.resize(8 * ev.dr.size() + 1);
      void *out[3] = {o0.data(), o1.data(), o2.data()};
      session.run(sym, in, out);
      acc += o2[0];
   }
   const auto t1 = std::chrono::steady_clock::now();
   if (acc == 1234.5)
      std::puts("");
   return std::chrono::duration<double>(t1 - t0).count() / events.size();
}
}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    import sofie_root  # noqa: I001  (before ROOT: it sets cling flags)
    import sofie_root.rdf as srdf
    from sofie_root.frontends.gnn import GraphNetwork
    from sofie_root.rdf import codegen

    import ROOT
    import torch

    def mlp(f_in: int, f_out: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(f_in, 32), torch.nn.ReLU(), torch.nn.Linear(32, f_out)).eval()

    torch.manual_seed(0)
    gn = GraphNetwork(edge_model=mlp(1 + 2 * 4 + 2, 8), node_model=mlp(8 + 4 + 2, 8), global_model=mlp(8 + 8 + 2, 1),
                      node_features=4, edge_features=1, global_features=2)
    model = sofie_root.compile(gn, exporter="torchscript")
    ROOT.gInterpreter.Declare(CODE)
    bench = ROOT.sofie_bench_gnn
    bench.make(args.events)
    blob = model._blob
    session_type = f"{model.namespace}::Session"
    print(f"{args.events} graphs, 3-39 nodes, 2 edges per node; medians of {args.reps} interleaved runs")
    print(f"{'output':<12} {'functor us/event':>17} {'Session us/event':>17} {'ratio':>6} {'allocations':>12}")
    for out in ("globals_out", "nodes_out"):
        f = srdf.functor(model, inputs=INPUTS, outputs=out, variable=True, types=TYPES, slot=True)
        cls = f"{codegen.namespace(f.plan)}::SlotFunctor"
        fa, fb = [], []
        for _ in range(args.reps):
            fa.append(bench.functor_loop[cls](f))
            fb.append(bench.session_loop[session_type](int(blob.ctypes.data), int(blob.size)))
        a, b = statistics.median(fa), statistics.median(fb)
        print(f"{out:<12} {a * 1e6:>17.1f} {b * 1e6:>17.1f} {a / b:>6.2f} {f.allocations():>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
