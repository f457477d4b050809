// Calls per second of an embedder on a fixed list of texts, for the "direct"
// halves of the benchmarks (the same work the load generator sends a node).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pool/embedder.hpp"

namespace pool::bench {

using steady = std::chrono::steady_clock;

/// Calls per second of `group` texts per call (texts taken in order, round
/// robin) over at least `seconds`; adds each call's first output to `checksum`.
inline double calls_per_second(const pool::embedder& model,
                               const std::vector<std::string>& texts, size_t group,
                               double seconds, float& checksum) {
  std::vector<float> out(group * model.dim());
  std::vector<std::string_view> views(group);
  uint64_t calls = 0;
  size_t next = 0;
  auto start = steady::now();
  auto end = start + std::chrono::duration_cast<steady::duration>(
                         std::chrono::duration<double>(seconds));
  steady::time_point now;
  do {
    for (int rep = 0; rep < 16; ++rep) {
      for (size_t k = 0; k < group; ++k)
        views[k] = texts[(next++) % texts.size()];
      model.embed(views, "", out.data());
      checksum += out[0];
      ++calls;
    }
    now = steady::now();
  } while (now < end);
  return static_cast<double>(calls) / std::chrono::duration<double>(now - start).count();
}

}  // namespace pool::bench
