// sofie_root: reading a model's weight blob from a .root file with ROOT I/O alone (TFile, TTree,
// TObjString). Copied into the headers `sofie-root emit` writes; see serialization/SCHEMA.md.
#ifndef SOFIE_ROOT_ROOT_IO_HXX
#define SOFIE_ROOT_ROOT_IO_HXX

#include <cstddef>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "TBranch.h"
#include "TFile.h"
#include "TObjString.h"
#include "TTree.h"

namespace sofie_rt_io {

// The weight blob of model `model` in `path` (the bytes of all entries of `<model>/weights`,
// concatenated). `expect_tag` (a `"key":"value"` string of the stored JSON, such as the weights'
// checksum) and `expect_bytes` make sure the file holds the model the header was emitted from.
inline std::vector<unsigned char> read_blob(const char *path, const char *model, const char *expect_tag,
                                            std::size_t expect_bytes, std::size_t chunk_bytes)
{
   const std::string where = std::string(path) + ":" + model;
   std::unique_ptr<TFile> file(TFile::Open(path, "READ"));
   if (!file || file->IsZombie())
      throw std::runtime_error("sofie_root: cannot open " + std::string(path));
   auto *ir = file->Get<TObjString>((std::string(model) + "/ir").c_str());
   if (!ir)
      throw std::runtime_error("sofie_root: " + where + ": no such model in the file");
   const std::string text = ir->GetString().Data();
   delete ir;
   if (text.find(expect_tag) == std::string::npos)
      throw std::runtime_error("sofie_root: " + where +
                               ": the stored model is not the one this header was generated from");
   auto *tree = file->Get<TTree>((std::string(model) + "/weights").c_str());
   if (!tree)
      throw std::runtime_error("sofie_root: " + where + ": the weight tree is missing");
   TBranch *counter = tree->GetBranch("nchunk");
   TBranch *bytes = tree->GetBranch("chunk");
   if (!counter || !bytes)
      throw std::runtime_error("sofie_root: " + where + ": the weight tree lacks its branches");
   const Long64_t entries = tree->GetEntries();
   // sizes first (no buffer can overflow), then the bytes
   Int_t n = 0;
   tree->SetBranchStatus("*", false);
   tree->SetBranchStatus("nchunk", true);
   tree->SetBranchAddress("nchunk", &n);
   std::size_t total = 0;
   for (Long64_t i = 0; i < entries; ++i) {
      if (counter->GetEntry(i) <= 0 || n < 0 || std::size_t(n) > chunk_bytes)
         throw std::runtime_error("sofie_root: " + where + ": corrupt weight chunk sizes");
      total += std::size_t(n);
   }
   if (total != expect_bytes)
      throw std::runtime_error("sofie_root: " + where + ": " + std::to_string(total) + " weight bytes stored, " +
                               std::to_string(expect_bytes) + " expected");
   std::vector<unsigned char> blob(total);
   std::vector<unsigned char> buf(chunk_bytes ? chunk_bytes : 1);
   tree->SetBranchStatus("chunk", true);
   tree->SetBranchAddress("chunk", buf.data());
   std::size_t at = 0;
   for (Long64_t i = 0; i < entries; ++i) {
      counter->GetEntry(i);
      const std::size_t expected_n = std::size_t(n);
      if (bytes->GetEntry(i) < 0)
         throw std::runtime_error("sofie_root: " + where + ": cannot read weight chunk " + std::to_string(i));
      if (std::size_t(n) != expected_n || at + expected_n > total)
         throw std::runtime_error("sofie_root: " + where + ": corrupt weight chunk " + std::to_string(i));
      std::memcpy(blob.data() + at, buf.data(), expected_n);
      at += expected_n;
   }
   tree->ResetBranchAddresses();
   return blob;
}

} // namespace sofie_rt_io

#endif // SOFIE_ROOT_ROOT_IO_HXX
