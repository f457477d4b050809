// BERT WordPiece tokenizer, id-for-id compatible with Hugging Face `tokenizers`
// configured like bert-base-uncased's tokenizer.json (BertNormalizer,
// BertPreTokenizer, WordPiece, "[CLS] $A [SEP]", truncation).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

namespace pool::bert {

struct tokenizer_options {
  /// HF BertNormalizer `lowercase` (tokenizer_config.json do_lower_case).
  bool lower_case = true;
  /// Total ids including [CLS] and [SEP]; longer input is truncated.
  size_t max_length = 512;
  /// HF BertNormalizer `strip_accents` (NFD, then drop Mn); unset = follows
  /// lower_case, as in Hugging Face.
  std::optional<bool> strip_accents;
  /// HF BertNormalizer `handle_chinese_chars` (tokenize_chinese_chars).
  bool chinese_chars = true;
  /// sentence-transformers' do_lower_case: Python's str.lower() of the whole
  /// text (full case mapping, final sigma) before the tokenizer sees it.
  bool lower_first = false;

  bool strips_accents() const { return strip_accents.value_or(lower_case); }
};

/// Python's str.lower() of UTF-8 text: full lowercase mapping (U+0130 becomes
/// "i\u0307"), Greek capital sigma as final sigma at the end of a word.
/// Invalid bytes are kept as they are.
std::string python_lower(std::string_view utf8_text);

/// Pipeline of `encode`, in Hugging Face's order:
/// 1. The special tokens [CLS] [SEP] [PAD] [UNK] [MASK] that occur literally
///    (case-sensitive) in the raw text become their own ids, like HF's added
///    special tokens; the text between them is processed as below.
/// 2. Clean: drop U+0000, U+FFFD, invalid UTF-8 bytes and Cc/Cf/Co characters
///    except \t \n \r; map every White_Space character to ' '.
/// 0. With lower_first: python_lower of the text.
/// 3. With chinese_chars: surround CJK ideographs (HF's hard-coded ranges)
///    with spaces.
/// 4. With strips_accents(): NFD, drop category Mn. With lower_case:
///    lowercase (full mapping).
/// 5. Split on whitespace; isolate punctuation (ASCII symbols and Unicode P*).
/// 6. Greedy longest-match-first WordPiece with "##" continuations; a word of
///    more than 100 code points, or one that cannot be fully matched, is [UNK].
/// 7. [CLS] + first (max_length - 2) ids + [SEP].
///
/// Unicode version: categories, NFD and case mappings come from utf8proc. HF
/// takes control/Mn/punctuation classes from Unicode 8.0 tables (Rust crate
/// unicode_categories); the code points where that differs from utf8proc are
/// overridden by wordpiece_hf_overrides.inc, generated from the reference by
/// tools/fixtures/gen_wordpiece_overrides.js.
///
/// Thread-safety: immutable after `load`; `encode` may be called concurrently.
/// Copies are cheap and share the vocabulary.
class wordpiece_tokenizer {
 public:
  /// Loads vocab.txt (one token per line, id = line number; trailing whitespace
  /// of a line is ignored, a repeated token keeps its last id). Errors name the
  /// file: unreadable, empty, lacking [CLS]/[SEP]/[PAD]/[UNK], or max_length < 2.
  static caf::expected<wordpiece_tokenizer> load(const std::string& vocab_path,
                                                 tokenizer_options opts);

  /// [CLS] + wordpieces + [SEP], truncated to opts.max_length (counting the
  /// specials). Never fails: invalid UTF-8 bytes are dropped.
  std::vector<int32_t> encode(std::string_view utf8_text) const;

  /// [CLS] + wordpieces + [SEP] of the whole text, without truncation.
  std::vector<int32_t> encode_untruncated(std::string_view utf8_text) const;

  /// Number of lines of the vocabulary file (one more than the largest id).
  size_t vocab_size() const;

  int32_t cls_id() const;
  int32_t sep_id() const;
  int32_t pad_id() const;
  int32_t unk_id() const;

  /// The vocabulary entry of `id` ("" outside the vocabulary).
  std::string_view token_text(int32_t id) const;

  /// True for [CLS], [SEP], [PAD], [UNK] and [MASK].
  bool is_special(int32_t id) const;

  const tokenizer_options& options() const { return opts_; }

  struct vocab;  // implementation detail, defined in wordpiece.cpp

 private:
  wordpiece_tokenizer(std::shared_ptr<const vocab> v, tokenizer_options opts)
      : vocab_(std::move(v)), opts_(opts) {}

  std::shared_ptr<const vocab> vocab_;
  tokenizer_options opts_;
};

}  // namespace pool::bert
