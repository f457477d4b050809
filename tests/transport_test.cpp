// The transport under hostile or broken peers, multi-process on 127.0.0.1: TLS
// connections that fail or end touch only themselves, clients never hang on a
// node that does not answer, idle connections are closed, and raw frames are
// refused on a TLS port.
#include <catch2/catch.hpp>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>

#include <sys/resource.h>
#include <nlohmann/json.hpp>

#include "pool/client.hpp"
#include "status_helpers.hpp"
#include "transport_helpers.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using pool::test::node_process;
using pool::test::raw_socket;
using pool::test::run_command;
using pool::test::test_pki;

using pool::test::status_of;

namespace {

std::unique_ptr<pool::client> connect_client(pool::client_options opts) {
  auto cl = pool::client::connect(opts);
  if (!cl)
    throw std::runtime_error("cannot connect: " + pool::describe(cl.error()));
  return std::move(*cl);
}

size_t count_of(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + needle.size()))
    ++n;
  return n;
}

pool::test::run_result cli(uint16_t port, const std::vector<std::string>& extra,
                           const std::string& text) {
  std::vector<std::string> argv = {EMBEDPOOL_CLI_BIN, "--port=" + std::to_string(port),
                                   "--timeout=20"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back("embed");
  argv.push_back(text);
  return run_command(argv, 40s);
}

/// A 32-byte BASP header (CAF 0.17, network byte order).
std::string basp_header(uint8_t operation, uint32_t payload_len, uint64_t dest_actor) {
  std::string h(32, '\0');
  h[0] = static_cast<char>(operation);
  for (int i = 0; i < 4; ++i)
    h[4 + i] = static_cast<char>((payload_len >> (24 - 8 * i)) & 0xff);
  for (int i = 0; i < 8; ++i)
    h[24 + i] = static_cast<char>((dest_actor >> (56 - 8 * i)) & 0xff);
  return h;
}

/// CAF 0.17's varbyte length of a sequence or string.
std::string varbyte(size_t n) {
  std::string out;
  do {
    auto low = static_cast<uint8_t>(n & 0x7f);
    n >>= 7;
    out.push_back(static_cast<char>(n != 0 ? (low | 0x80) : low));
  } while (n != 0);
  return out;
}

/// The payload of a direct message: an empty forwarding stack, then a message
/// holding a message holding ... (`depth` levels) the empty message.
std::string nested_payload(size_t depth) {
  auto level = [](const std::string& type_names) {
    return std::string(2, '\0') + varbyte(type_names.size()) + type_names;
  };
  std::string out(1, '\0');
  auto outer = level("@<>+@message");
  out.reserve(1 + depth * outer.size() + 8);
  for (size_t i = 0; i < depth; ++i)
    out += outer;
  out += level("@<>");
  return out;
}

}  // namespace

TEST_CASE("TLS connections that fail or end on a head's port cut no other connection",
          "[transport][tls]") {
  test_pki pki;
  auto head_args = pki.args("node");
  head_args.push_back("--pool.workers=1");
  node_process head{head_args};
  CHECK_THAT(head.log(), Catch::Contains("event=tls_enabled error_queue_guard=true"));
  auto worker_args = pki.args("worker");
  worker_args.push_back("--pool.workers=2");
  pool::test::worker_node worker{head.port(), "tls-w", worker_args};
  REQUIRE(worker.wait_for_log("event=joined", 20s));

  pool::client_options opts;
  opts.port = head.port();
  opts.timeout = 20s;
  opts.tls.certificate = pki.path("client.pem");
  opts.tls.key = pki.path("client.key");
  opts.tls.ca_file = pki.path("ca.pem");
  auto cl = connect_client(opts);

  // The connected client embeds without pause while the probes run.
  std::atomic<bool> probing{true};
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::mutex mtx;
  std::string first_error;
  std::thread load{[&] {
    for (int i = 0; probing.load() && i < 100000; ++i) {
      auto x = cl->embed("steady traffic " + std::to_string(i));
      if (x) {
        ++ok;
      } else {
        ++failed;
        std::lock_guard<std::mutex> guard{mtx};
        first_error = pool::describe(x.error());
        break;
      }
    }
  }};

  constexpr int probes = 50;
  // No certificate: a plain BASP client on the TLS port.
  auto anonymous = std::async(std::launch::async, [&] {
    int refused = 0;
    for (int i = 0; i < probes; ++i)
      if (cli(head.port(), {}, "no certificate").status.code != 0)
        ++refused;
    return refused;
  });
  // Certified CLI calls that finish and disconnect.
  std::string certified_failure;  // the first failed call's status and stderr
  auto certified = std::async(std::launch::async, [&] {
    int served = 0;
    for (int i = 0; i < probes; ++i) {
      auto r = cli(head.port(), pki.args("client"), "certified " + std::to_string(i));
      if (r.status.exited && r.status.code == 0)
        ++served;
      else if (certified_failure.empty())
        certified_failure = r.status.describe() + ": " + r.err;
    }
    return served;
  });
  // Plain TCP connects and `openssl s_client` without a certificate.
  auto scanners = std::async(std::launch::async, [&] {
    for (int i = 0; i < probes; ++i) {
      raw_socket s{head.port()};
      run_command({"/usr/bin/openssl", "s_client", "-connect",
                   "127.0.0.1:" + std::to_string(head.port())},
                  20s);
    }
    return true;
  });
  CHECK(anonymous.get() == probes);
  auto served = certified.get();
  INFO("first failed certified call: " << certified_failure);
  CHECK(served == probes);
  CHECK(scanners.get());
  probing = false;
  load.join();

  auto head_log = head.log();
  INFO("head log:\n" << head_log << "\nworker log:\n" << worker.log());
  INFO("worker stderr:\n" << worker.err());
  INFO("first failed request: " << first_error);
  // The worker node still runs (under the sanitizers, a report ends it).
  if (auto ended = worker.process().poll_exit())
    FAIL_CHECK("the worker node ended: " << ended->describe());
  CHECK(failed == 0);
  CHECK(ok > 0);
  REQUIRE(cl->connected());
  auto st = status_of(*cl);
  int ready = 0;
  for (auto& w : st.at("workers"))
    if (w.at("node") == "tls-w" && w.at("state") == "ready")
      ++ready;
  CHECK(ready == 2);
  CHECK(count_of(head_log, "event=worker_died") == 0);
  CHECK(count_of(head_log, "remote_link_unreachable") == 0);
  CHECK(count_of(worker.log(), "event=supervisor_lost") == 0);
  // Refused handshakes are logged with the peer's address, rate-limited.
  CHECK_THAT(head_log, Catch::Contains("event=tls_handshake_refused peer=127.0.0.1:"));
  CHECK(count_of(head_log, "event=tls_handshake_refused") < 2 * probes);
}

TEST_CASE("A TLS port refuses raw BASP frames before reading their payload",
          "[transport][tls]") {
  test_pki pki;
  auto args = pki.args("node");
  args.push_back("--pool.workers=1");
  node_process node{args};
  auto rss_before = pool::test::rss_kb(node.process().pid());
  std::vector<std::unique_ptr<raw_socket>> peers;
  for (int i = 0; i < 8; ++i) {
    peers.push_back(std::make_unique<raw_socket>(node.port()));
    // A direct message to actor 1 announcing 4 GiB - 1 of payload.
    peers.back()->send_all(basp_header(0x02, 0xffffffffu, 1) + std::string(4096, 'x'));
  }
  for (auto& p : peers) {
    bool closed = false;
    for (int i = 0; i < 100 && !closed; ++i)
      closed = p->closed_by_peer(100ms);
    CHECK(closed);
  }
  auto rss_after = pool::test::rss_kb(node.process().pid());
  CHECK(rss_after - rss_before < 64 * 1024);  // far below 8 x 4 GiB
  pool::client_options opts;
  opts.port = node.port();
  opts.tls.certificate = pki.path("client.pem");
  opts.tls.key = pki.path("client.key");
  opts.tls.ca_file = pki.path("ca.pem");
  auto cl = connect_client(opts);
  CHECK(cl->embed("still serving"));
}

TEST_CASE(
    "A client gives up on a node that never answers its handshake and uses the "
    "fallback",
    "[transport][client]") {
  pool::test::silent_listener silent;
  node_process good{{"--pool.workers=1"}};
  SECTION("the library: connect_timeout bounds each node") {
    pool::client_options opts;
    opts.port = silent.port();
    opts.connect_timeout = 1s;
    auto start = std::chrono::steady_clock::now();
    auto refused = pool::client::connect(opts);
    auto took = std::chrono::steady_clock::now() - start;
    REQUIRE_FALSE(refused);
    CHECK(pool::pool_code(refused.error()) == pool::pool_errc::unavailable);
    CHECK_THAT(pool::describe(refused.error()), Catch::Contains("no handshake within"));
    CHECK(took < 5s);
    opts.fallbacks = {"127.0.0.1:" + std::to_string(good.port())};
    auto cl = connect_client(opts);
    CHECK(cl->embed("served by the fallback"));
    CHECK(cl->stats().node == "127.0.0.1:" + std::to_string(good.port()));
  }
  SECTION("the CLI: --timeout bounds connect, then --fallback is tried") {
    auto start = std::chrono::steady_clock::now();
    auto r = run_command({EMBEDPOOL_CLI_BIN, "--port=" + std::to_string(silent.port()),
                          "--fallback=127.0.0.1:" + std::to_string(good.port()),
                          "--timeout=2", "embed", "fallback text"},
                         30s);
    INFO("stderr: " << r.err);
    CHECK(r.status.code == 0);
    CHECK_THAT(r.out, Catch::StartsWith("{\"dim\":384"));
    CHECK(std::chrono::steady_clock::now() - start < 15s);
  }
  SECTION("the CLI against a frozen (SIGSTOPped) node alone fails within its timeout") {
    node_process frozen{{"--pool.workers=1"}};
    frozen.process().signal(SIGSTOP);
    auto r = run_command({EMBEDPOOL_CLI_BIN, "--port=" + std::to_string(frozen.port()),
                          "--timeout=2", "status"},
                         30s);
    frozen.process().signal(SIGCONT);
    CHECK(r.status.code == 1);
    CHECK_THAT(r.err, Catch::Contains("error: unavailable"));
    CHECK_THAT(r.err, Catch::Contains("no handshake within 2000 ms"));
  }
}

TEST_CASE(
    "A client with reconnect fails pending calls at once and moves to the next node",
    "[transport][client]") {
  node_process first{{"--pool.workers=1", "--fault.compute-delay=200ms"}};
  node_process second{{"--pool.workers=1"}};
  pool::client_options opts;
  opts.port = first.port();
  opts.fallbacks = {"127.0.0.1:" + std::to_string(second.port())};
  opts.timeout = 60s;
  opts.reconnect = true;
  auto cl = connect_client(opts);
  REQUIRE(cl->embed("before"));
  std::vector<std::future<caf::expected<std::vector<float>>>> pending;
  for (int i = 0; i < 5; ++i)
    pending.push_back(cl->embed_future("pending " + std::to_string(i)));
  auto killed_at = std::chrono::steady_clock::now();
  first.process().signal(SIGKILL);
  for (auto& f : pending) {
    REQUIRE(f.wait_for(10s) == std::future_status::ready);
    auto x = f.get();
    if (!x)
      CHECK(pool::pool_code(x.error()) == pool::pool_errc::unavailable);
  }
  CHECK(std::chrono::steady_clock::now() - killed_at < 10s);  // not the 60 s timeout
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (cl->stats().reconnects == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  auto stats = cl->stats();
  REQUIRE(stats.reconnects == 1);
  CHECK(stats.connected);
  CHECK(stats.node == "127.0.0.1:" + std::to_string(second.port()));
  CHECK(cl->embed("after"));
}

#ifdef EMBEDPOOL_LOADGEN_BIN
TEST_CASE("The load generator stops with an error when it loses its node",
          "[transport][loadgen]") {
  node_process node{{"--pool.workers=1"}};
  pool::test::temp_dir dir;
  pool::test::redirections io;
  io.stdout_file = (dir.path() / "out.json").string();
  io.stderr_file = (dir.path() / "err.txt").string();
  pool::test::child_process gen{
      {EMBEDPOOL_LOADGEN_BIN, "--port=" + std::to_string(node.port()), "--mode=embed",
       "--rate=2000", "--duration=60", "--text-bytes=64", "--status-interval=0",
       "--timeout=30"},
      io};
  // Kill the node once the generator's requests arrive.
  auto probe = connect_client([&] {
    pool::client_options o;
    o.port = node.port();
    return o;
  }());
  auto deadline = std::chrono::steady_clock::now() + 20s;
  uint64_t accepted = 0;
  while (accepted < 200 && std::chrono::steady_clock::now() < deadline) {
    accepted = status_of(*probe).at("ledger").at("accepted").get<uint64_t>();
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE(accepted >= 200);
  node.process().signal(SIGKILL);
  auto st = gen.wait_exit(15s);
  REQUIRE(st);
  auto err = pool::test::slurp(dir.path() / "err.txt");
  INFO("stderr: " << err);
  CHECK(st->code == 3);
  CHECK_THAT(err, Catch::Contains("lost the connection"));
  auto summary = json::parse(pool::test::slurp(dir.path() / "out.json"));
  uint64_t errors = 0;
  for (auto& [code, n] : summary.at("errors").items())
    errors += n.get<uint64_t>();
  auto sent = summary.at("sent").get<uint64_t>();
  CHECK(sent == summary.at("completed").get<uint64_t>() + errors +
                    summary.at("missing").get<uint64_t>());
  // At 2000/s for the few seconds it ran, not millions.
  CHECK(sent < 60000);
  CHECK(summary.at("missing") == 0);
}
#endif

TEST_CASE("A node raises its descriptor limit and closes connections that stay silent",
          "[transport][descriptors]") {
  // Start the node with a low soft limit, as many systems do.
  rlimit saved{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &saved) == 0);
  rlimit low = saved;
  low.rlim_cur = std::min<rlim_t>(1024, saved.rlim_max);
  REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
  std::optional<node_process> node;
  try {
    node.emplace(std::vector<std::string>{"--pool.workers=1",
                                          "--middleman.connection-timeout=2s",
                                          "--middleman.heartbeat-interval=500ms"});
  } catch (...) {
    setrlimit(RLIMIT_NOFILE, &saved);
    throw;
  }
  setrlimit(RLIMIT_NOFILE, &saved);
  auto log = node->log();
  CHECK_THAT(log, Catch::Contains("event=fd_limit soft_before=" +
                                  std::to_string(static_cast<uint64_t>(low.rlim_cur))));
  CHECK_THAT(
      log,
      Catch::Contains(
          "soft=" + std::to_string(static_cast<uint64_t>(
                        saved.rlim_max == RLIM_INFINITY ? UINT64_MAX : saved.rlim_max))));
  // A legitimate client, connected first, idle throughout (its heartbeats
  // keep it alive).
  pool::client_options opts;
  opts.port = node->port();
  auto idle_client = connect_client(opts);
  // 200 connections that never send a byte, 20 that send half a header.
  std::vector<std::unique_ptr<raw_socket>> silent;
  for (int i = 0; i < 220; ++i) {
    silent.push_back(std::make_unique<raw_socket>(node->port()));
    if (i >= 200)
      silent.back()->send_all(std::string(16, '\0'));
  }
  // A new client is served while they are open.
  auto fresh = connect_client(opts);
  CHECK(fresh->embed("served while 220 connections idle"));
  fresh.reset();
  auto deadline = std::chrono::steady_clock::now() + 20s;
  size_t closed = 0;
  while (closed < silent.size() && std::chrono::steady_clock::now() < deadline) {
    closed = 0;
    for (auto& s : silent)
      if (s->closed_by_peer(0ms))
        ++closed;
    std::this_thread::sleep_for(50ms);
  }
  CHECK(closed == silent.size());
  CHECK_THAT(node->log(), Catch::Contains("event=idle_connections_closed"));
  CHECK(idle_client->connected());
  CHECK(idle_client->embed("the idle client is still connected"));
  auto again = connect_client(opts);
  CHECK(again->embed("and a new client is served"));
}

TEST_CASE(
    "A plaintext port bounds raw BASP frames: lying sizes, random bytes, deep nesting",
    "[transport][frames]") {
  node_process node{{"--pool.workers=1"}};
  CHECK_THAT(node.log(), Catch::Contains("event=basp_limits max_frame_bytes="));
  CHECK_THAT(node.log(), Catch::Contains("guard=true"));
  pool::client_options opts;
  opts.port = node.port();
  auto cl = connect_client(opts);
  REQUIRE(cl->embed("before the frames"));
  auto pid = node.process().pid();
  auto rss_before = pool::test::rss_kb(pid);
  SECTION("a header announcing 4 GiB closes its connection before any allocation") {
    std::vector<std::unique_ptr<raw_socket>> peers;
    for (int i = 0; i < 8; ++i) {
      peers.push_back(std::make_unique<raw_socket>(node.port()));
      peers.back()->send_all(basp_header(0x02, 0xffffffffu, 1) + std::string(1024, 'x'));
    }
    for (auto& p : peers) {
      bool closed = false;
      for (int i = 0; i < 100 && !closed; ++i)
        closed = p->closed_by_peer(100ms);
      CHECK(closed);
    }
    CHECK(pool::test::rss_kb(pid) - rss_before < 64 * 1024);  // not 8 x 4 GiB
    CHECK(node.wait_for_log("event=basp_frame_refused reason=payload_too_large", 5s));
  }
  SECTION("random bytes are refused and cost nothing") {
    std::string noise(65536, '\0');
    uint32_t x = 12345;
    for (auto& c : noise) {
      x = x * 1664525u + 1013904223u;
      c = static_cast<char>(x >> 24);
    }
    for (int i = 0; i < 20; ++i) {
      raw_socket s{node.port()};
      s.send_all(noise);
    }
    CHECK(pool::test::rss_kb(pid) - rss_before < 64 * 1024);
  }
  SECTION("a message nested 30,000 deep is dropped instead of overflowing the stack") {
    auto payload = nested_payload(30000);
    // CAF deserializes only messages to a registered actor: every id 1..32.
    std::vector<std::unique_ptr<raw_socket>> peers;
    for (uint64_t id = 1; id <= 32; ++id) {
      peers.push_back(std::make_unique<raw_socket>(node.port()));
      peers.back()->send_all(
          basp_header(0x02, static_cast<uint32_t>(payload.size()), id) + payload);
    }
    CHECK(node.wait_for_log("reason=message_nested_too_deep", 10s));
  }
  CHECK_FALSE(node.process().poll_exit());
  CHECK(cl->connected());
  CHECK(cl->embed("after the frames"));
}
