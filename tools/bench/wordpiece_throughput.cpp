// Single-thread throughput of pool::bert::wordpiece_tokenizer on the golden texts.
//
// Usage: wordpiece_throughput [vocab.txt] [golden.jsonl] [seconds_per_set]
// Defaults: tests/data/tokenizer/bert-base-uncased-vocab.txt and
// tests/data/tokenizer/golden.jsonl of this source tree, 2 seconds.
// The code-point sweep records are skipped (synthetic, not text).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bert/wordpiece.hpp"
#include "pool/error.hpp"

namespace {

std::string source_root() {
  std::string here = __FILE__;  // <root>/tools/bench/wordpiece_throughput.cpp
  for (int i = 0; i < 3; ++i)
    here = here.substr(0, here.find_last_of('/'));
  return here;
}

struct text_set {
  std::string name;
  std::vector<std::string> texts;
  size_t bytes = 0;
};

void run(const pool::bert::wordpiece_tokenizer& tok, const text_set& set,
         double seconds) {
  using clock = std::chrono::steady_clock;
  size_t texts = 0;
  size_t tokens = 0;
  size_t bytes = 0;
  size_t checksum = 0;
  const auto start = clock::now();
  std::chrono::duration<double> elapsed{0};
  do {
    for (const auto& text : set.texts) {
      auto ids = tok.encode(text);
      tokens += ids.size();
      checksum += static_cast<size_t>(ids[ids.size() / 2]);
    }
    texts += set.texts.size();
    bytes += set.bytes;
    elapsed = clock::now() - start;
  } while (elapsed.count() < seconds);
  const double s = elapsed.count();
  std::printf(
      "%-22s %6zu texts  max_length=%-4zu  %10.0f texts/s  %11.0f tokens/s  %7.1f MB/s"
      "  (checksum %zu)\n",
      set.name.c_str(), set.texts.size(), tok.options().max_length, texts / s, tokens / s,
      bytes / s / 1e6, checksum);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string root = source_root();
  const std::string vocab =
      argc > 1 ? argv[1] : root + "/tests/data/tokenizer/bert-base-uncased-vocab.txt";
  const std::string golden =
      argc > 2 ? argv[2] : root + "/tests/data/tokenizer/golden.jsonl";
  const double seconds = argc > 3 ? std::atof(argv[3]) : 2.0;

  text_set all{"all golden texts", {}, 0};
  text_set ascii{"ascii sentences", {}, 0};
  text_set longest{"truncation (long)", {}, 0};
  std::ifstream in{golden};
  if (!in) {
    std::fprintf(stderr, "cannot open %s\n", golden.c_str());
    return 1;
  }
  for (std::string line; std::getline(in, line);) {
    if (line.empty())
      continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("text"))
      continue;
    const auto category = j.value("category", std::string{});
    if (category == "codepoint_sweep")
      continue;
    auto text = j["text"].get<std::string>();
    for (auto* set : {&all, category == "ascii" ? &ascii : nullptr,
                      category == "truncation" ? &longest : nullptr}) {
      if (set) {
        set->bytes += text.size();
        set->texts.push_back(text);
      }
    }
  }
  for (size_t max_length : {512, 128}) {
    auto tok = pool::bert::wordpiece_tokenizer::load(vocab, [&] {
      pool::bert::tokenizer_options o;
      o.max_length = max_length;
      return o;
    }());
    if (!tok) {
      std::fprintf(stderr, "%s\n", pool::describe(tok.error()).c_str());
      return 1;
    }
    for (const auto* set : {&all, &ascii, &longest})
      run(*tok, *set, seconds);
  }
  return 0;
}
