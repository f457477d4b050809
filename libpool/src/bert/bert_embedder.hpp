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
  /// `truncate`: model.truncate (false: texts over max_seq_length tokens are
  /// refused by embed_counted).
  bert_embedder(std::shared_ptr<const bert_model> model, wordpiece_tokenizer tokenizer,
                bool truncate = true);

  /// The model directory's name.
  std::string name() const override { return encoder_.model().name; }

  /// The hidden size.
  size_t dim() const override { return encoder_.dim(); }

  /// A task that names one of the model's prompts (config_sentence_transformers
  /// .json) prepends it; the empty task prepends the default prompt, if any;
  /// any other task embeds the text as is (the supervisor refuses unknown
  /// tasks before they get here). Texts longer than max_seq_length tokens are
  /// truncated. Throws std::invalid_argument only if the tokenizer yields ids
  /// the encoder refuses (prevented by the constructor's checks).
  void embed(const std::vector<std::string_view>& texts, const std::string& task,
             float* out) const override;

  /// WordPiece tokens the encoder sees, [CLS] and [SEP] included, after
  /// truncation to max_seq_length (no task prefix).
  size_t count_tokens(const std::vector<std::string_view>& texts) const override;

  /// Tokenizes every text once: counts its tokens and, with model.truncate
  /// false, refuses (too_large) a text over max_seq_length tokens.
  void embed_counted(const std::vector<std::string_view>& texts, const std::string& task,
                     float* out, pool::embed_report& report) const override;

  /// The prompt names, sorted.
  std::vector<std::string> tasks() const override;

  /// max_seq_length.
  size_t max_input_tokens() const override { return tokenizer_.options().max_length; }

  /// modules.json lists a Normalize module.
  bool normalizes() const override { return encoder_.config().normalize; }

  std::string pooling() const override {
    return encoder_.config().pooling == pooling_mode::cls ? "cls" : "mean";
  }

  caf::expected<std::vector<token>> tokenize(std::string_view text,
                                             const std::string& task) const override;

  caf::expected<std::string> detokenize(const std::vector<int64_t>& ids) const override;

  /// Every weight tensor as float32.
  size_t weights_bytes() const override;

  /// Encoder scratch for `max_batch_texts` sequences of max_seq_length
  /// tokens, their token ids and the output rows.
  size_t worker_bytes(uint32_t max_batch_texts) const override;

  const encoder& text_encoder() const { return encoder_; }
  const wordpiece_tokenizer& tokenizer() const { return tokenizer_; }

  /// The token ids `embed` feeds the encoder for `text` under `task`.
  std::vector<int32_t> token_ids(std::string_view text, const std::string& task) const;

 private:
  const std::string& prefix_for(const std::string& task) const;

  encoder encoder_;
  wordpiece_tokenizer tokenizer_;
  bool truncate_ = true;
};

/// Loads the directory `cfg.path` (see load_bert_model) and its vocab.txt.
/// Errors are `invalid_input` naming `model.path` or the offending file.
caf::expected<std::shared_ptr<const pool::embedder>> make_bert_embedder(
    const pool::model_config& cfg);

}  // namespace pool::bert
