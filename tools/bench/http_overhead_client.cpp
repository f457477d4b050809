// Closed-loop HTTP load for tools/bench/http_overhead.sh: WINDOW threads, each
// with its own keep-alive connection, POST one text per request to the node's
// HTTP front until the time is up. Prints one JSON line: window, requests,
// errors (by status), throughput_rps, latency_ms {p50, p90, p99, max}.
//
// usage: http_overhead_client --port=P [--path=/v1/embeddings|/embed]
//          [--window=W] [--seconds=S] [--text-bytes=N]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace {

struct options {
  int port = 0;
  std::string path = "/v1/embeddings";
  int window = 1;
  double seconds = 5;
  size_t text_bytes = 64;
};

bool parse(int argc, char** argv, options& opts) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* key) -> const char* {
      auto n = std::strlen(key);
      return arg.compare(0, n, key) == 0 ? arg.c_str() + n : nullptr;
    };
    if (auto* port = value("--port="))
      opts.port = std::atoi(port);
    else if (auto* path = value("--path="))
      opts.path = path;
    else if (auto* window = value("--window="))
      opts.window = std::atoi(window);
    else if (auto* seconds = value("--seconds="))
      opts.seconds = std::atof(seconds);
    else if (auto* bytes = value("--text-bytes="))
      opts.text_bytes = static_cast<size_t>(std::atol(bytes));
    else
      return false;
  }
  return opts.port > 0 && opts.window > 0 && opts.seconds > 0 && opts.text_bytes > 0;
}

/// A text of `bytes` bytes of words, varied by `seed`.
std::string make_text(size_t bytes, uint64_t seed) {
  static const char* words[] = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta"};
  std::string text;
  while (text.size() < bytes) {
    if (!text.empty())
      text += ' ';
    text += words[seed % 6];
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  }
  text.resize(bytes);
  if (text.back() == ' ')
    text.back() = 'x';
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  options opts;
  if (!parse(argc, argv, opts)) {
    std::fprintf(stderr,
                 "usage: http_overhead_client --port=P [--path=/v1/embeddings|/embed] "
                 "[--window=W] [--seconds=S] [--text-bytes=N]\n");
    return 2;
  }
  const char* field = opts.path == "/embed" ? "inputs" : "input";
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                      std::chrono::duration<double>(opts.seconds));
  std::mutex mtx;
  std::vector<double> latencies_ms;
  std::map<int, uint64_t> errors;
  std::vector<std::thread> threads;
  auto started = std::chrono::steady_clock::now();
  for (int t = 0; t < opts.window; ++t) {
    threads.emplace_back([&, t] {
      httplib::Client client{"127.0.0.1", opts.port};
      client.set_keep_alive(true);
      client.set_tcp_nodelay(true);  // headers and body go out in separate writes
      client.set_read_timeout(60, 0);
      std::vector<double> local;
      std::map<int, uint64_t> local_errors;
      for (uint64_t i = 0; std::chrono::steady_clock::now() < deadline; ++i) {
        nlohmann::json body = {
            {field, make_text(opts.text_bytes, i * 131 + static_cast<uint64_t>(t))}};
        auto sent = std::chrono::steady_clock::now();
        auto res = client.Post(opts.path.c_str(), body.dump(), "application/json");
        auto took = std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - sent)
                        .count();
        if (res && res->status == 200)
          local.push_back(took);
        else
          ++local_errors[res ? res->status : -1];
      }
      std::lock_guard<std::mutex> guard{mtx};
      latencies_ms.insert(latencies_ms.end(), local.begin(), local.end());
      for (auto& [status, n] : local_errors)
        errors[status] += n;
    });
  }
  for (auto& th : threads)
    th.join();
  auto elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto pct = [&](double p) {
    if (latencies_ms.empty())
      return 0.0;
    auto i = static_cast<size_t>(p * static_cast<double>(latencies_ms.size() - 1));
    return latencies_ms[i];
  };
  nlohmann::json err_json = nlohmann::json::object();
  for (auto& [status, n] : errors)
    err_json[std::to_string(status)] = n;
  nlohmann::json out = {
      {"path", opts.path},
      {"window", opts.window},
      {"text_bytes", opts.text_bytes},
      {"requests", latencies_ms.size()},
      {"errors", err_json},
      {"throughput_rps", static_cast<double>(latencies_ms.size()) / elapsed},
      {"latency_ms",
       {{"p50", pct(0.5)}, {"p90", pct(0.9)}, {"p99", pct(0.99)}, {"max", pct(1.0)}}}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
