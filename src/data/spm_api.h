// The boundary between outq and the sentencepiece library (private to data/).
//
// Debian's libsentencepiece carries its own copy of protobuf-lite 3.14 with exported symbols,
// while LibTorch pulls in the system libprotobuf 3.21. Loaded into one process the two copies
// interpose on each other and the process crashes at start-up. So sentencepiece is only ever
// touched from a small shared library (liboutq_spm.so, spm_shim.cpp) that outq loads with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND): its protobuf stays private and LibTorch's is unaffected.
// The shim exposes one C entry point returning this table of functions.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace outq::spm {

inline constexpr int kApiVersion = 2;

struct Api {
  int version;
  /// Loads a serialized model; returns a handle or nullptr with *error set.
  void* (*load)(const std::string& bytes, std::string* error);
  void (*destroy)(void* handle);
  /// Trains a model from lines with trainer arguments; false with *error on failure.
  bool (*train)(const std::vector<std::string>& lines, const std::unordered_map<std::string, std::string>& args,
                std::string* model, std::string* error);
  bool (*encode)(const void* handle, std::string_view text, std::vector<int>* ids, std::string* error);
  bool (*decode)(const void* handle, const std::vector<int>& ids, std::string* text, std::string* error);
  std::string (*piece)(const void* handle, int id);
  int (*vocab_size)(const void* handle);
  int (*bos_id)(const void* handle);
  int (*eos_id)(const void* handle);
  int (*unk_id)(const void* handle);
  int (*pad_id)(const void* handle);  ///< -1: none
  float (*score)(const void* handle, int id);
  /// GGUF's token types: 1 normal, 2 unknown, 3 control, 5 unused, 6 byte.
  int (*piece_type)(const void* handle, int id);
};

}  // namespace outq::spm

extern "C" const outq::spm::Api* outq_spm_api();
