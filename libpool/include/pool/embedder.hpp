// The embedder: plain C++ (no actors) that turns a batch of texts into a
// row-major float matrix. Workers own no model state of their own: all workers
// of a model share one embedder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace pool {

/// Per-text results of `embedder::embed_counted`.
struct embed_report {
  /// Tokens the model saw for each text: prompt included, after truncation.
  std::vector<uint32_t> tokens;
  /// Per text: set when the text was refused and its row left as zeros
  /// (`too_large` when it is longer than the model's input limit and
  /// model.truncate is false; the message names its token count and the limit).
  std::vector<caf::error> refused;
};

/// Thread-safety: `embed` is const and may be called from several worker
/// threads at once; implementations keep per-call scratch memory and never
/// mutate shared state after construction.
class embedder {
 public:
  virtual ~embedder() = default;

  /// Name of the model, e.g. "hash-384" or the model directory's name.
  virtual std::string name() const = 0;

  /// Dimension of every embedding.
  virtual size_t dim() const = 0;

  /// Embeds `texts` into `out`, which must hold `texts.size() * dim()` floats;
  /// row i receives the embedding of texts[i]. `task` selects a model-specific
  /// prefix ("query", "passage", ...; empty for none); models without prefixes
  /// ignore it. Texts are valid, non-empty UTF-8 (the gateway checks).
  virtual void embed(const std::vector<std::string_view>& texts, const std::string& task,
                     float* out) const = 0;

  /// Bytes of model state every worker of the model shares (weights,
  /// projection tables): counted once per model against pool.memory-budget.
  virtual size_t weights_bytes() const = 0;

  /// Upper estimate of the bytes one worker uses while it embeds
  /// `max_batch_texts` texts in one call (pool.micro-batch-texts): the
  /// embedder's per-call scratch (activations) plus the output rows. Counted
  /// per worker against pool.memory-budget. Excludes the texts themselves.
  virtual size_t worker_bytes(uint32_t max_batch_texts) const = 0;

  /// Tokens the model sees for `texts` (metrics and usage reports). The
  /// default counts whitespace-separated words; thread-safe like `embed`.
  virtual size_t count_tokens(const std::vector<std::string_view>& texts) const;

  /// `embed` that also reports, per text, the tokens the model saw and
  /// whether the text was refused (see embed_report); `report` is resized to
  /// texts.size(). What workers call: the counts come from the tokenization
  /// that embedded the text. The default embeds and counts with count_tokens.
  virtual void embed_counted(const std::vector<std::string_view>& texts,
                             const std::string& task, float* out,
                             embed_report& report) const;

  /// The task names the model knows (its prompt names), sorted; a request
  /// naming another task is refused with invalid_input. Default: none, so only
  /// the empty task is accepted.
  virtual std::vector<std::string> tasks() const { return {}; }

  /// Most tokens one input may have ([CLS] and [SEP] included); 0 = no limit.
  virtual size_t max_input_tokens() const { return 0; }

  /// True if every embedding is L2-normalised by the model itself (hash; a
  /// bert model whose modules.json lists Normalize).
  virtual bool normalizes() const { return true; }

  /// The pooling of token states: "mean", "cls", or "none" (hash).
  virtual std::string pooling() const { return "none"; }

  /// One token of `tokenize`.
  struct token {
    int32_t id = 0;
    std::string text;  // the vocabulary entry
    bool special = false;
  };

  /// The tokens `embed` feeds the model for `text` under `task`, specials
  /// included. Default: invalid_input (the model has no vocabulary).
  virtual caf::expected<std::vector<token>> tokenize(std::string_view text,
                                                     const std::string& task) const;

  /// A text that the model's tokenizer turns into exactly `ids` (a leading
  /// [CLS] and trailing [SEP] may be given or left out), for token-id inputs.
  /// invalid_input when an id is out of range, the ids are not what the
  /// tokenizer produces for any text (they do not round-trip), or the model
  /// has no vocabulary (the default).
  virtual caf::expected<std::string> detokenize(const std::vector<int64_t>& ids) const;
};

/// invalid_input naming the known tasks if `task` is neither empty nor one
/// of `known` (sorted); none otherwise.
caf::error check_task(const std::string& task, const std::vector<std::string>& known,
                      const std::string& model_name);

/// Sets the number of OpenBLAS threads of the calling process (OpenBLAS keeps
/// one global pool; workers share it).
void set_blas_threads(int n);

}  // namespace pool
