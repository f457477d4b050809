// Deterministic request texts shared by the load generator and the direct
// embedder benchmark, so that both measure the same work.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace pool::loadgen {

/// `count` distinct ASCII texts of exactly `bytes` bytes (bytes >= 1): a
/// number that makes each text unique, then words from a fixed vocabulary.
inline std::vector<std::string> make_texts(size_t count, size_t bytes, uint64_t seed) {
  static constexpr const char* vocabulary[] = {
      "the",      "pool",      "worker",   "embeds",  "text",   "quickly", "under",
      "load",     "credit",    "queue",    "bounded", "memory", "request", "answer",
      "deadline", "node",      "network",  "vector",  "model",  "batch",   "supervisor",
      "restart",  "heartbeat", "data",     "search",  "query",  "passage", "similar",
      "words",    "river",     "mountain", "city",
  };
  constexpr size_t vocabulary_size = sizeof(vocabulary) / sizeof(vocabulary[0]);
  uint64_t state = seed;
  auto next = [&state] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return state >> 33;
  };
  std::vector<std::string> texts;
  texts.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    std::string text = "t" + std::to_string(i);
    while (text.size() < bytes) {
      text += (next() % 8 == 0) ? ". " : " ";
      text += vocabulary[next() % vocabulary_size];
    }
    text.resize(bytes);
    if (text.back() == ' ')
      text.back() = 'x';
    texts.push_back(std::move(text));
  }
  return texts;
}

/// Non-empty lines of `path` (a trailing '\r' removed); empty if unreadable.
inline std::vector<std::string> read_texts(const std::string& path) {
  std::vector<std::string> texts;
  std::ifstream in{path};
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    if (!line.empty())
      texts.push_back(std::move(line));
  }
  return texts;
}

}  // namespace pool::loadgen
