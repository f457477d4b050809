// The latency halves of tools/bench/floor.sh: one request at a time, each
// call timed alone (send to answer), against a node or against the raw CAF
// 0.17 anchor this same program serves.
//
//   floor_probe serve-raw
//       publishes one plain CAF actor on 127.0.0.1 (a free port, printed as
//       `port=P` on stdout) that answers a string with 384 floats — a CAF
//       request/reply with the payload of a hash-384 embedding and nothing
//       else — until stdin closes. Its actor system has the CAF settings a
//       node has (pool::node_caf_defaults).
//   floor_probe raw --port=P [--calls=N] [--text-bytes=B]
//       N remote requests to that actor from a scoped actor, with the CAF
//       settings of pool::client (pool::client_caf_defaults).
//   floor_probe raw-window --port=P [--window=W] [--seconds=S] [--text-bytes=B]
//       keeps W requests in flight to that actor for S seconds from one
//       event-based actor and prints {"target":"raw_caf_window","window":W,
//       "answers":N,"throughput_rps":R}: the most one request per message
//       gets out of CAF on this machine.
//   floor_probe pool --port=P [--calls=N] [--text-bytes=B]
//       N blocking pool::client::embed calls to a node.
//   floor_probe gateway --port=P [--calls=N] [--text-bytes=B]
//       N `(embed, text)` requests from a scoped actor straight to a node's
//       gateway: the node's share of the time without the client library's.
//   Any of them also takes CAF options (`--work-stealing.K=V`,
//   `--scheduler.K=V`) applied after the defaults, to try other settings.
//
// The clients print one JSON line: {"target":..., "calls":N, "p50_us":...,
// "p90_us":..., "p99_us":..., "mean_us":...}. The first 5 % of calls warm up
// and are not counted.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "../loadgen/texts.hpp"
#include "pool/caf_defaults.hpp"
#include "pool/client.hpp"
#include "pool/error.hpp"

namespace {

using steady = std::chrono::steady_clock;

constexpr size_t dims = 384;

struct probe_args {
  std::string mode;
  uint16_t port = 0;
  size_t calls = 5000;
  size_t text_bytes = 64;
  /// raw-window: requests kept in flight, and for how long.
  size_t window = 256;
  double seconds = 4;
  /// CAF options (`--work-stealing.*`, `--scheduler.*`) added after the
  /// defaults, to try other settings.
  std::vector<std::string> caf_args;
};

int usage() {
  std::fprintf(stderr,
               "usage: floor_probe serve-raw | raw|pool|gateway --port=P [--calls=N] "
               "[--text-bytes=B] | raw-window --port=P [--window=W] [--seconds=S] "
               "[--work-stealing.K=V ...]\n");
  return 2;
}

bool parse(int argc, char** argv, probe_args& out) {
  if (argc < 2)
    return false;
  out.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--work-stealing.", 0) == 0 || arg.rfind("--scheduler.", 0) == 0) {
      out.caf_args.push_back(arg);
      continue;
    }
    auto eq = arg.find('=');
    if (eq == std::string::npos)
      return false;
    auto key = arg.substr(0, eq);
    auto value = std::strtoul(arg.c_str() + eq + 1, nullptr, 10);
    if (key == "--port")
      out.port = static_cast<uint16_t>(value);
    else if (key == "--calls")
      out.calls = value;
    else if (key == "--text-bytes")
      out.text_bytes = value;
    else if (key == "--window")
      out.window = value;
    else if (key == "--seconds")
      out.seconds = std::strtod(arg.c_str() + eq + 1, nullptr);
    else
      return false;
  }
  if (out.mode == "serve-raw")
    return true;
  if (out.mode == "raw-window")
    return out.port != 0 && out.window > 0 && out.seconds > 0;
  return (out.mode == "raw" || out.mode == "pool" || out.mode == "gateway") &&
         out.port != 0 && out.calls >= 20 && out.text_bytes > 0;
}

/// A CAF system configured from `args` (CAF's own `--section.key=value`).
struct probe_config : caf::actor_system_config {
  explicit probe_config(const std::vector<std::string>& args) {
    add_message_type<std::vector<float>>("std::vector<float>");
    load<caf::io::middleman>();
    std::istringstream no_ini;
    if (auto err = parse(args, no_ini)) {
      std::fprintf(stderr, "floor_probe: %s\n", render(err).c_str());
      std::exit(2);
    }
  }
};

std::vector<std::string> concat(std::vector<std::string> xs,
                                const std::vector<std::string>& ys) {
  xs.insert(xs.end(), ys.begin(), ys.end());
  return xs;
}

int serve_raw(const probe_args& args) {
  probe_config cfg{concat(pool::node_caf_defaults(), args.caf_args)};
  caf::actor_system sys{cfg};
  auto server = sys.spawn([]() -> caf::behavior {
    return {[](const std::string& text) {
      std::vector<float> out(dims);
      out[0] = static_cast<float>(text.size());
      return out;
    }};
  });
  auto port = sys.middleman().publish(server, 0, "127.0.0.1");
  if (!port) {
    std::fprintf(stderr, "floor_probe: %s\n", sys.render(port.error()).c_str());
    return 1;
  }
  std::printf("port=%u\n", static_cast<unsigned>(*port));
  std::fflush(stdout);
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  caf::anon_send_exit(server, caf::exit_reason::user_shutdown);
  return 0;
}

void report(const char* target, std::vector<double> micros) {
  auto warm = micros.size() / 20;
  micros.erase(micros.begin(), micros.begin() + static_cast<ptrdiff_t>(warm));
  std::sort(micros.begin(), micros.end());
  auto at = [&](double q) {
    return micros[std::min(micros.size() - 1, static_cast<size_t>(q * micros.size()))];
  };
  double sum = 0;
  for (auto m : micros)
    sum += m;
  std::printf(
      "{\"target\":\"%s\",\"calls\":%zu,\"p50_us\":%.1f,\"p90_us\":%.1f,"
      "\"p99_us\":%.1f,\"mean_us\":%.1f}\n",
      target, micros.size(), at(0.5), at(0.9), at(0.99),
      sum / static_cast<double>(micros.size()));
}

/// Times `calls` calls of `one_call(text)` (false = failed: stop) over
/// 1,024 texts of `text_bytes`, and reports them as `target`.
template <class Call>
int time_calls(const char* target, const probe_args& args, Call one_call) {
  auto texts = pool::loadgen::make_texts(1024, args.text_bytes, 42);
  std::vector<double> micros;
  micros.reserve(args.calls);
  for (size_t i = 0; i < args.calls; ++i) {
    auto start = steady::now();
    if (!one_call(texts[i % texts.size()]))
      return 1;
    micros.push_back(
        std::chrono::duration<double, std::micro>(steady::now() - start).count());
  }
  report(target, std::move(micros));
  return 0;
}

/// Times requests `(prefix..., text)` from a scoped actor to the actor
/// published at 127.0.0.1:port, each answered by a `Reply` that `valid`
/// accepts.
template <class Reply, class Valid, class... Prefix>
int time_remote_requests(const char* target, const probe_args& args, Valid valid,
                         Prefix... prefix) {
  probe_config cfg{concat(pool::client_caf_defaults(), args.caf_args)};
  pool::add_message_types(cfg);
  caf::actor_system sys{cfg};
  auto server = sys.middleman().remote_actor("127.0.0.1", args.port);
  if (!server) {
    std::fprintf(stderr, "floor_probe: %s\n", sys.render(server.error()).c_str());
    return 1;
  }
  caf::scoped_actor self{sys};
  return time_calls(target, args, [&](const std::string& text) {
    bool ok = false;
    self->request(*server, caf::infinite, prefix..., text)
        .receive([&](const Reply& reply) { ok = valid(reply); },
                 [&](caf::error& err) {
                   std::fprintf(stderr, "floor_probe: %s\n", sys.render(err).c_str());
                 });
    return ok;
  });
}

/// Keeps `args.window` requests in flight to the raw anchor for
/// `args.seconds` and reports the answers per second.
int raw_window(const probe_args& args) {
  probe_config cfg{concat(pool::client_caf_defaults(), args.caf_args)};
  caf::actor_system sys{cfg};
  auto server = sys.middleman().remote_actor("127.0.0.1", args.port);
  if (!server) {
    std::fprintf(stderr, "floor_probe: %s\n", sys.render(server.error()).c_str());
    return 1;
  }
  auto texts = pool::loadgen::make_texts(1024, args.text_bytes, 42);
  caf::scoped_actor self{sys};
  auto deadline = steady::now() + std::chrono::duration_cast<steady::duration>(
                                      std::chrono::duration<double>(args.seconds));
  auto answered = std::make_shared<size_t>(0);
  auto waiter = caf::actor_cast<caf::actor>(self);
  auto srv = *server;
  sys.spawn([=](caf::event_based_actor* drv) -> caf::behavior {
    auto next = std::make_shared<size_t>(0);
    auto in_flight = std::make_shared<size_t>(0);
    auto done = std::make_shared<caf::actor>(waiter);
    std::shared_ptr<std::function<void()>> send_one =
        std::make_shared<std::function<void()>>();
    *send_one = [=] {
      ++*in_flight;
      drv->request(srv, caf::infinite, texts[(*next)++ % texts.size()])
          .then([=](const std::vector<float>&) {
            --*in_flight;
            ++*answered;
            if (steady::now() < deadline)
              (*send_one)();
            else if (*in_flight == 0) {
              drv->send(*done, caf::ok_atom::value);
              *send_one = nullptr;
              drv->quit();
            }
          });
    };
    for (size_t i = 0; i < args.window; ++i)
      (*send_one)();
    return {[](caf::ok_atom) {}};
  });
  auto start = steady::now();
  self->receive([](caf::ok_atom) {});
  double secs = std::chrono::duration<double>(steady::now() - start).count();
  std::printf(
      "{\"target\":\"raw_caf_window\",\"window\":%zu,\"answers\":%zu,"
      "\"throughput_rps\":%.1f}\n",
      args.window, *answered, static_cast<double>(*answered) / secs);
  return 0;
}

int probe_pool(const probe_args& args) {
  pool::client_options opts;
  opts.port = args.port;
  opts.caf_args = args.caf_args;
  auto cl = pool::client::connect(opts);
  if (!cl) {
    std::fprintf(stderr, "floor_probe: %s\n", pool::describe(cl.error()).c_str());
    return 1;
  }
  return time_calls("embedpool", args, [&](const std::string& text) {
    auto vec = (*cl)->embed(text);
    if (!vec)
      std::fprintf(stderr, "floor_probe: %s\n", pool::describe(vec.error()).c_str());
    return static_cast<bool>(vec);
  });
}

}  // namespace

int main(int argc, char** argv) {
  probe_args args;
  if (!parse(argc, argv, args))
    return usage();
  if (args.mode == "serve-raw")
    return serve_raw(args);
  if (args.mode == "raw")
    return time_remote_requests<std::vector<float>>(
        "raw_caf", args, [](const std::vector<float>& v) { return v.size() == dims; });
  if (args.mode == "raw-window")
    return raw_window(args);
  if (args.mode == "gateway")
    return time_remote_requests<pool::matrix>(
        "gateway", args, [](const pool::matrix& m) { return m.rows == 1; },
        pool::embed_atom::value);
  return probe_pool(args);
}
