// liboutq_spm.so: the only code that calls sentencepiece (see spm_api.h for why it is separate).
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "spm_api.h"

namespace {

using sentencepiece::SentencePieceProcessor;

// Feeds in-memory lines to the trainer (no temporary text file needed).
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<std::string>& lines) : lines_(lines) {}
  bool done() const override { return index_ >= lines_.size(); }
  void Next() override { ++index_; }
  const std::string& value() const override { return lines_[index_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& lines_;
  size_t index_ = 0;
};

const SentencePieceProcessor& sp(const void* h) { return *static_cast<const SentencePieceProcessor*>(h); }

void* load(const std::string& bytes, std::string* error) {
  auto* p = new SentencePieceProcessor();
  const auto status = p->LoadFromSerializedProto(bytes);
  if (!status.ok()) {
    *error = status.ToString();
    delete p;
    return nullptr;
  }
  return p;
}

void destroy(void* h) { delete static_cast<SentencePieceProcessor*>(h); }

bool train(const std::vector<std::string>& lines, const std::unordered_map<std::string, std::string>& args,
           std::string* model, std::string* error) {
  LineIterator iterator(lines);
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &iterator, model);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

bool encode(const void* h, std::string_view text, std::vector<int>* ids, std::string* error) {
  const auto status = sp(h).Encode(absl::string_view(text.data(), text.size()), ids);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

bool decode(const void* h, const std::vector<int>& ids, std::string* text, std::string* error) {
  const auto status = sp(h).Decode(ids, text);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

std::string piece(const void* h, int id) { return sp(h).IdToPiece(id); }
int vocab_size(const void* h) { return sp(h).GetPieceSize(); }
int bos_id(const void* h) { return sp(h).bos_id(); }
int eos_id(const void* h) { return sp(h).eos_id(); }

int unk_id(const void* h) { return sp(h).unk_id(); }
int pad_id(const void* h) { return sp(h).pad_id(); }
float score(const void* h, int id) { return sp(h).GetScore(id); }
int piece_type(const void* h, int id) {
  if (sp(h).IsUnknown(id)) return 2;
  if (sp(h).IsControl(id)) return 3;
  if (sp(h).IsUnused(id)) return 5;
  if (sp(h).IsByte(id)) return 6;
  return 1;
}

const outq::spm::Api kApi = {outq::spm::kApiVersion, load, destroy, train, encode, decode, piece, vocab_size,
                             bos_id, eos_id, unk_id, pad_id, score, piece_type};

}  // namespace

extern "C" __attribute__((visibility("default"))) const outq::spm::Api* outq_spm_api() { return &kApi; }
