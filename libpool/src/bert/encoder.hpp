// The BERT encoder: token ids in, pooled sentence embeddings out, computed
// exactly like Hugging Face's BertModel in eval mode followed by
// sentence-transformers' Pooling (mean or CLS) and optional Normalize.
//
// All sequences of a call are packed back to back (no padding) for the
// per-token work (projections, FFN, LayerNorm); attention runs per sequence on
// its own rows, so no attention mask is needed. Every matrix product goes
// through cblas_sgemm.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "bert/model_loader.hpp"

namespace pool::bert {

/// Thread-safety: immutable after construction; `encode` is const, keeps all
/// scratch memory per call and may run on several threads at once (OpenBLAS
/// itself serialises or parallelises its own calls).
class encoder {
 public:
  /// Most tokens packed into one forward pass; larger calls are cut into
  /// chunks of whole sequences, which bounds scratch memory to about
  /// `(5H + I) * 4` bytes per token (54 MiB for MiniLM-L6 shapes at 4096
  /// tokens). A single sequence longer than this still runs as its own chunk.
  static constexpr size_t default_chunk_tokens = 4096;

  /// Shares `model`. Throws std::invalid_argument naming the first config
  /// value or tensor whose size does not match the config.
  explicit encoder(std::shared_ptr<const bert_model> model,
                   size_t chunk_tokens = default_chunk_tokens);

  /// Hidden size H: the width of every output row.
  size_t dim() const { return static_cast<size_t>(cfg().hidden_size); }

  /// Longest accepted sequence (in tokens, [CLS] and [SEP] included): the
  /// number of position embeddings.
  size_t max_tokens() const { return static_cast<size_t>(cfg().max_position_embeddings); }

  const bert_config& config() const { return cfg(); }

  /// Most tokens packed into one forward pass (see default_chunk_tokens).
  size_t chunk_tokens() const { return chunk_tokens_; }

  /// Scratch bytes of one `encode` call over `sequences` sequences of at most
  /// `max_len` tokens each: per packed token (5H + I) floats, plus one
  /// max_len x max_len attention score matrix.
  size_t scratch_bytes(size_t sequences, size_t max_len) const;
  const bert_model& model() const { return *model_; }

  /// Writes one row of `dim()` floats per sequence of `token_ids` to `out`
  /// (which must hold `token_ids.size() * dim()` floats): the mean over all
  /// tokens or the [CLS] row of the last hidden state, L2-normalised if the
  /// config says so. The result for a sequence does not depend on the other
  /// sequences of the call. Throws std::invalid_argument, before writing
  /// anything, for an empty sequence, one longer than `max_tokens()` or a token
  /// id outside [0, vocab_size). An empty `token_ids` writes nothing.
  void encode(const std::vector<std::vector<int32_t>>& token_ids, float* out) const;

 private:
  const bert_config& cfg() const { return model_->config; }
  void encode_chunk(const std::vector<std::vector<int32_t>>& token_ids, size_t first,
                    size_t last, float* out) const;

  std::shared_ptr<const bert_model> model_;
  size_t chunk_tokens_;
};

}  // namespace pool::bert
