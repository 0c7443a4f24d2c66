/// \file
/// \ingroup tutorial_sofie_root
/// \notebook -nodraw
/// Run a sofie_root model from plain ROOT C++, without Python: the standalone header written by
/// `sofie-root emit` plus the weights in the .root file are all it takes. The model scores every
/// event of an RDataFrame on all cores (one Session per slot, ROOT::EnableImplicitMT).
///
/// Prepare (once, anywhere with sofie_root installed):
///
///     sofie-root compile dense.onnx -o model.root --name dense   # the IR and weights, compressed
///     sofie-root emit model.root:dense -o .                      # writes dense.hxx
///
/// Run (ROOT only):
///
///     root -l -b -q 'sofie_root002_emit_rdf.C("model.root", "events.root", "scores.root")'
///
/// `events.root` holds a TTree "Events" with seven float columns x0..x6 and a 64-bit "event"
/// number; the scores are written to the TTree "Scores" (event, score) of `scores.root`.
///
/// \macro_output
/// \author sofie_root developers

#include "dense.hxx" // sofie-root emit model.root:dense -o <a directory on the include path>

#include <ROOT/RDataFrame.hxx>
#include <TROOT.h>

#include <cstdio>
#include <memory>
#include <vector>

void sofie_root002_emit_rdf(const char *model_file = "model.root", const char *data_file = "events.root",
                            const char *out_file = "scores.root", unsigned nthreads = 4)
{
   ROOT::EnableImplicitMT(nthreads);
   ROOT::RDataFrame df("Events", data_file);

   // One Session per slot: each owns its weights (read from the .root file with TFile) and its
   // scratch memory, so slots never share state and need no locks.
   std::vector<std::unique_ptr<sofie_dense::Session>> sessions;
   for (unsigned slot = 0; slot < df.GetNSlots(); ++slot)
      sessions.push_back(std::make_unique<sofie_dense::Session>(model_file, "dense"));

   auto score = [&sessions](unsigned slot, float x0, float x1, float x2, float x3, float x4, float x5, float x6) {
      const float x[7] = {x0, x1, x2, x3, x4, x5, x6};
      float y[1];
      sessions[slot]->infer(1, x, y); // batch of one event: the symbolic batch dimension N = 1
      return y[0];
   };
   auto scored = df.DefineSlot("score", score, {"x0", "x1", "x2", "x3", "x4", "x5", "x6"});
   auto mean = scored.Mean<float>("score");
   auto count = scored.Count();
   scored.Snapshot("Scores", out_file, {"event", "score"});
   std::printf("scored %lld events on %u slots, mean score %.6f\n", (long long)*count, df.GetNSlots(),
               *mean);
}
