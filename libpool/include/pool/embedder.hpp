// The embedder: plain C++ (no actors) that turns a batch of texts into a
// row-major float matrix. Workers own no model state of their own: all workers
// of a model share one embedder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

namespace pool {

struct model_config;

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
};

/// Creates the embedder that `cfg.kind` names ("hash" or "bert"); an error
/// names the offending key or file.
caf::expected<std::shared_ptr<const embedder>> make_embedder(const model_config& cfg);

/// Sets the number of OpenBLAS threads of the calling process (OpenBLAS keeps
/// one global pool; workers share it).
void set_blas_threads(int n);

}  // namespace pool
