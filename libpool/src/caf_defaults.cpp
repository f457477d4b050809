#include "pool/caf_defaults.hpp"

#include <algorithm>
#include <thread>

namespace pool {

std::vector<std::string> scheduler_caf_defaults() {
  // CAF 0.17's defaults poll for 500 rounds of 50 us before sleeping: an idle
  // node spends 7-13 % of a core polling, and each wake costs ~100 us of
  // context switches on the request path. Going to the blocking wait at once
  // (woken by each new job) halves a lone request's latency; an idle thread
  // re-checks its peers' queues every 100 ms instead of every 10 ms.
  return {"--work-stealing.moderate-poll-attempts=0",
          "--work-stealing.relaxed-sleep-duration=100ms"};
}

unsigned node_scheduler_threads() {
  return std::clamp(std::thread::hardware_concurrency() / 2, 2u, 8u);
}

std::vector<std::string> node_caf_defaults() {
  auto out = scheduler_caf_defaults();
  // The scheduler runs the node's actors and the short chunks workers embed
  // inline; BLAS runs on each worker's own compute thread. CAF's default of
  // max(cores, 4) threads spreads each request over more threads (each hop a
  // wake-up) and, on 2 cores, took batch throughput from 0.85-0.87 to
  // 0.70-0.85 of direct calls.
  out.emplace_back("--scheduler.max-threads=" + std::to_string(node_scheduler_threads()));
  out.emplace_back("--middleman.heartbeat-interval=1s");
  out.emplace_back("--middleman.connection-timeout=10s");
  return out;
}

std::vector<std::string> client_caf_defaults() {
  auto out = scheduler_caf_defaults();
  out.emplace_back("--scheduler.max-threads=2");
  out.emplace_back("--middleman.heartbeat-interval=1s");
  return out;
}

std::string caf_option_key(const std::string& option) {
  auto begin = option.rfind("--", 0) == 0 ? 2 : 0;
  return option.substr(begin, option.find('=') - begin);
}

}  // namespace pool
