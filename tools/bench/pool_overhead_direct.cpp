// The "direct" half of the pool-overhead benchmark (tools/bench/pool_overhead.sh):
// the node's default embedder (hash-384) called in this process, one thread,
// on the same texts the load generator sends — one text per call (like an
// embed request) and --batch-size texts per call (like a batch request).
// Prints one JSON line: {"embed_rps":..., "batch_rps":..., "batch_texts_per_s":...};
// with --only=embed or --only=batch it measures (and prints) that half alone,
// for a benchmark that runs each half right beside the run it anchors.
//
// usage: pool_overhead_direct [--text-bytes=N] [--batch-size=K] [--seconds=S]
//                             [--only=embed|batch]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "../loadgen/texts.hpp"
#include "embed_rate.hpp"
#include "pool/config.hpp"
#include "pool/embedder.hpp"
#include "pool/error.hpp"
#include "pool/make_embedder.hpp"

int main(int argc, char** argv) {
  size_t text_bytes = 64;
  size_t batch_size = 16;
  double seconds = 3;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = arg.substr(arg.find('=') + 1);
    if (arg.rfind("--text-bytes=", 0) == 0)
      text_bytes = std::strtoul(value.c_str(), nullptr, 10);
    else if (arg.rfind("--batch-size=", 0) == 0)
      batch_size = std::strtoul(value.c_str(), nullptr, 10);
    else if (arg.rfind("--seconds=", 0) == 0)
      seconds = std::strtod(value.c_str(), nullptr);
    else if (arg.rfind("--only=", 0) == 0 && (value == "embed" || value == "batch"))
      only = value;
    else {
      std::fprintf(stderr,
                   "usage: pool_overhead_direct [--text-bytes=N] [--batch-size=K] "
                   "[--seconds=S] [--only=embed|batch]\n");
      return 2;
    }
  }
  if (text_bytes == 0 || batch_size == 0 || !(seconds > 0)) {
    std::fprintf(stderr, "pool_overhead_direct: values must be positive\n");
    return 2;
  }
  auto model = pool::make_embedder(pool::model_config{});
  if (!model) {
    std::fprintf(stderr, "pool_overhead_direct: %s\n",
                 pool::describe(model.error()).c_str());
    return 1;
  }
  pool::set_blas_threads(1);
  auto texts = pool::loadgen::make_texts(1024, text_bytes, 42);
  float checksum = 0;
  std::string fields;
  char buf[160];
  if (only != "batch") {
    auto embed_rps = pool::bench::calls_per_second(**model, texts, 1, seconds, checksum);
    std::snprintf(buf, sizeof buf, ",\"embed_rps\":%.1f", embed_rps);
    fields += buf;
  }
  if (only != "embed") {
    auto batch_rps =
        pool::bench::calls_per_second(**model, texts, batch_size, seconds, checksum);
    std::snprintf(buf, sizeof buf, ",\"batch_rps\":%.1f,\"batch_texts_per_s\":%.1f",
                  batch_rps, batch_rps * static_cast<double>(batch_size));
    fields += buf;
  }
  std::printf(
      "{\"model\":\"%s\",\"text_bytes\":%zu,\"batch_size\":%zu%s,\"checksum\":%.3f}\n",
      (*model)->name().c_str(), text_bytes, batch_size, fields.c_str(),
      static_cast<double>(checksum));
  return 0;
}
