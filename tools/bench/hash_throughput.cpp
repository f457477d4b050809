// Throughput of the built-in hash embedder (default config: dim 384, 4096
// buckets), one thread, OpenBLAS at 1 thread. Prints one JSON line per
// configuration: text length (~40 bytes and ~1 KiB) x batch size (1, 16, 64).
//
// Usage: hash_throughput [min-seconds-per-configuration, default 1.0]
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "pool/config.hpp"
#include "pool/embedder.hpp"
#include "pool/make_embedder.hpp"
#include "pool/error.hpp"

namespace {

constexpr const char* vocabulary[] = {
    "the",      "pool",      "worker",  "embeds",  "text",   "quickly", "under",
    "load",     "credit",    "queue",   "bounded", "memory", "request", "answer",
    "deadline", "node",      "network", "vector",  "model",  "batch",   "supervisor",
    "restart",  "heartbeat", "café",    "Straße",  "東京",   "data",    "search",
    "query",    "passage",   "similar", "words",
};

// Deterministic pseudo-random sentences of about `bytes` bytes.
std::vector<std::string> make_texts(size_t count, size_t bytes, uint64_t seed) {
  std::vector<std::string> texts;
  uint64_t state = seed;
  auto next = [&state] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return state >> 33;
  };
  constexpr size_t vocabulary_size = sizeof(vocabulary) / sizeof(vocabulary[0]);
  for (size_t i = 0; i < count; ++i) {
    std::string text;
    while (text.size() < bytes) {
      if (!text.empty())
        text += (next() % 8 == 0) ? ". " : " ";
      text += vocabulary[next() % vocabulary_size];
    }
    texts.push_back(std::move(text));
  }
  return texts;
}

}  // namespace

int main(int argc, char** argv) {
  double min_seconds = argc > 1 ? std::atof(argv[1]) : 1.0;
  if (!(min_seconds > 0))
    min_seconds = 1.0;
  pool::set_blas_threads(1);
  pool::model_config cfg;  // kind hash, dim 384, 4096 buckets
  auto made = pool::make_embedder(cfg);
  if (!made) {
    std::fprintf(stderr, "make_embedder: %s\n", pool::describe(made.error()).c_str());
    return 1;
  }
  const auto& embedder = **made;
  const size_t dim = embedder.dim();
  for (size_t text_bytes : {size_t{40}, size_t{1024}}) {
    // A pool of distinct texts, cycled through, so no batch repeats exactly.
    auto texts = make_texts(1024, text_bytes, 42 + text_bytes);
    size_t total_bytes = 0;
    for (const auto& t : texts)
      total_bytes += t.size();
    for (size_t batch : {size_t{1}, size_t{16}, size_t{64}}) {
      std::vector<float> out(batch * dim);
      std::vector<std::string_view> views(batch);
      size_t next = 0;
      auto run_batch = [&] {
        for (size_t i = 0; i < batch; ++i)
          views[i] = texts[next++ % texts.size()];
        embedder.embed(views, "", out.data());
      };
      run_batch();  // warm-up
      size_t done = 0;
      auto start = std::chrono::steady_clock::now();
      double elapsed = 0;
      do {
        run_batch();
        done += batch;
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                      .count();
      } while (elapsed < min_seconds);
      std::printf(
          "{\"bench\":\"hash_throughput\",\"model\":\"%s\",\"avg_text_bytes\":%zu,"
          "\"batch\":%zu,\"threads\":1,\"texts\":%zu,\"seconds\":%.3f,"
          "\"texts_per_s\":%.1f}\n",
          embedder.name().c_str(), total_bytes / texts.size(), batch, done, elapsed,
          static_cast<double>(done) / elapsed);
      std::fflush(stdout);
    }
  }
  return 0;
}
