// The built-in `hash` embedder: feature hashing of words, word bigrams and
// character trigrams, projected to `dim` with a fixed seeded ±1 matrix.
//
// Pipeline per text: Unicode normalisation (NFKC + case folding, utf8proc) ->
// words (maximal runs of letters, marks and numbers) -> features (word
// unigrams, adjacent word bigrams, character 3-grams of each word padded with
// boundary markers; a text without words gets one feature hashed from its
// bytes) -> signed feature hashing into `buckets` -> one `cblas_sgemm` of the
// batch's bag matrix [n x buckets] with the projection [buckets x dim], or for
// a sparse batch (one text, or texts sharing few buckets) one `cblas_saxpy`
// of a projection row per non-zero bucket -> L2 normalisation.
//
// Determinism: every step is bit-exact on any IEEE-754 machine. Hashes are
// integer arithmetic (FNV-1a 64 + murmur3 finaliser); weights use only +, *
// and sqrt (correctly rounded); each bag row is scaled by a power of two and
// rounded to integers whose absolute sum is below 2^24, and the projection
// holds only ±1, so every partial sum inside sgemm is an exactly representable
// integer: the product does not depend on the BLAS kernel, its summation order,
// FMA, the path (sgemm or saxpy), the batch size or the text's position in the
// batch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>

#include "pool/embedder.hpp"

namespace pool {

struct model_config;

namespace detail {

class hash_embedder : public embedder {
 public:
  static constexpr uint32_t min_dim = 1;
  static constexpr uint32_t max_dim = 4096;
  static constexpr uint32_t min_buckets = 16;
  static constexpr uint32_t max_buckets = 1u << 20;
  /// Upper bound of dim * buckets (the projection's float count, 1 GiB).
  static constexpr uint64_t max_projection_floats = uint64_t{1} << 28;

  /// Returns an error naming the offending key (`model.dim`,
  /// `model.hash-buckets`) if `cfg` is out of range, else a default error.
  static caf::error validate(const model_config& cfg);

  /// Builds the projection (dim * buckets floats). Throws std::invalid_argument
  /// for values that `validate` refuses; may throw std::bad_alloc.
  hash_embedder(uint32_t dim, uint32_t buckets);

  /// "hash-<dim>".
  std::string name() const override;

  size_t dim() const override { return dim_; }

  size_t buckets() const { return buckets_; }

  /// Thread-safe; `task` is ignored. `out` holds texts.size() * dim() floats.
  /// Texts that are not valid UTF-8 are embedded too (invalid bytes act as
  /// word separators); nothing here reads outside `texts` or `out`.
  void embed(const std::vector<std::string_view>& texts, const std::string& task,
             float* out) const override;

  /// `embed` that counts each text's tokens (whitespace-separated words, as
  /// `count_tokens`) while it hashes the text, instead of in a pass of its
  /// own; refuses nothing.
  void embed_counted(const std::vector<std::string_view>& texts, const std::string& task,
                     float* out, embed_report& report) const override;

  /// The projection: buckets * dim floats.
  size_t weights_bytes() const override;

  /// Per call of up to `max_batch_texts` texts: the dense bag of one sgemm
  /// (rows * buckets floats, rows capped per call), the gathered projection
  /// rows, the bucket index tables and the output rows.
  size_t worker_bytes(uint32_t max_batch_texts) const override;

  /// Writes the quantised bag of `text` (the row sgemm sees) into `row`, which
  /// holds buckets() floats. Every entry is an integer; their absolute sum is
  /// below 2^24. Exposed for tests.
  void bag_row(std::string_view text, float* row) const;

  /// The projection, row-major [buckets x dim], entries +1 or -1.
  const std::vector<float>& projection() const { return projection_; }

 private:
  struct scratch;

  // Fills s.entries with the quantised non-zero buckets of `text`; returns
  // its whitespace-separated words (`count_tokens`).
  size_t make_bag(std::string_view text, scratch& s) const;
  // `embed` with the calling thread's scratch, in calls of `rows_per_call`;
  // with `tokens`, writes each text's count there (texts.size() entries).
  void embed_with(const std::vector<std::string_view>& texts, scratch& s, float* out,
                  size_t rows_per_call, size_t n_total, uint32_t* tokens) const;
  // `embed` or `embed_counted`: `tokens` as in embed_with.
  void embed_into(const std::vector<std::string_view>& texts, float* out,
                  uint32_t* tokens) const;
  // Scales each of the `n` rows of `dim_` floats at `rows` to unit L2 norm.
  void normalize_rows(float* rows, size_t n) const;

  uint32_t dim_;
  uint32_t buckets_;
  std::vector<float> projection_;
};

}  // namespace detail
}  // namespace pool
