// The "bert" embedder: a local sentence-transformers BERT directory behind the
// pool::embedder interface (WordPiece tokenizer + encoder + pooling).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

#include "bert/encoder.hpp"
#include "bert/model_loader.hpp"
#include "bert/wordpiece.hpp"
#include "pool/config.hpp"
#include "pool/embedder.hpp"

namespace pool::bert {

/// Thread-safety: immutable after construction; `embed` may run on several
/// threads at once (per-call scratch only).
class bert_embedder final : public pool::embedder {
 public:
  /// Throws std::invalid_argument if the model's weights do not fit its config
  /// or the tokenizer can produce ids outside the model's vocabulary.
  bert_embedder(std::shared_ptr<const bert_model> model, wordpiece_tokenizer tokenizer);

  /// The model directory's name.
  std::string name() const override { return encoder_.model().name; }

  /// The hidden size.
  size_t dim() const override { return encoder_.dim(); }

  /// Task "query" prepends the model's query prefix, "passage" (or
  /// "document") its passage prefix; any other task, or a model without
  /// prefixes, embeds the text as is. Texts longer than max_seq_length tokens
  /// are truncated. Throws std::invalid_argument only if the tokenizer yields
  /// ids the encoder refuses (prevented by the constructor's checks).
  void embed(const std::vector<std::string_view>& texts, const std::string& task,
             float* out) const override;

  /// WordPiece tokens the encoder sees, [CLS] and [SEP] included, after
  /// truncation to max_seq_length (no task prefix).
  size_t count_tokens(const std::vector<std::string_view>& texts) const override;

  /// Every weight tensor as float32.
  size_t weights_bytes() const override;

  /// Encoder scratch for `max_batch_texts` sequences of max_seq_length
  /// tokens, their token ids and the output rows.
  size_t worker_bytes(uint32_t max_batch_texts) const override;

  const encoder& text_encoder() const { return encoder_; }
  const wordpiece_tokenizer& tokenizer() const { return tokenizer_; }

  /// The token ids `embed` feeds the encoder for `text` under `task`.
  std::vector<int32_t> tokenize(std::string_view text, const std::string& task) const;

 private:
  const std::string& prefix_for(const std::string& task) const;

  encoder encoder_;
  wordpiece_tokenizer tokenizer_;
};

/// Loads the directory `cfg.path` (see load_bert_model) and its vocab.txt.
/// Errors are `invalid_input` naming `model.path` or the offending file.
caf::expected<std::shared_ptr<const pool::embedder>> make_bert_embedder(
    const pool::model_config& cfg);

}  // namespace pool::bert
