// The token count of models without a vocabulary: whitespace-separated words.
#pragma once

#include <cstddef>
#include <string_view>

namespace pool::detail {

/// True for the six ASCII whitespace bytes (space, \t, \n, \v, \f, \r).
constexpr bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/// Maximal runs of bytes other than ASCII whitespace in `text`: what
/// `embedder::count_tokens` reports by default. Thread-safe, allocation-free.
inline size_t whitespace_words(std::string_view text) {
  size_t words = 0;
  bool in_word = false;
  for (char c : text) {
    const bool space = is_ascii_space(c);
    if (!space && !in_word)
      ++words;
    in_word = !space;
  }
  return words;
}

}  // namespace pool::detail
