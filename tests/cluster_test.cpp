// A real cluster on 127.0.0.1: a head node, worker nodes that lend it their
// workers, and clients. Node loss loses nothing; leaving and rejoining work.
#include <catch2/catch.hpp>

#include <atomic>
#include <future>
#include <mutex>

#include <nlohmann/json.hpp>

#include "pool/client.hpp"
#include "process_helpers.hpp"
#include "status_helpers.hpp"
#include "transport_helpers.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using pool::test::node_process;
using pool::test::temp_dir;
using pool::test::test_pki;
using pool::test::worker_node;

using pool::test::balanced;
using pool::test::node_entry;
using pool::test::status_of;
using pool::test::wait_status;

namespace {

std::unique_ptr<pool::client> connect(uint16_t port) {
  pool::client_options opts;
  opts.port = port;
  opts.timeout = 60s;
  auto cl = pool::client::connect(opts);
  if (!cl)
    throw std::runtime_error("cannot connect: " + pool::describe(cl.error()));
  return std::move(*cl);
}

uint64_t remote_completed(const json& st, const std::string& name) {
  uint64_t n = 0;
  for (auto& w : st.at("workers"))
    if (w.at("node") == name)
      n += w.at("completed").get<uint64_t>();
  return n;
}

/// Sends `count` embed requests from `threads` clients; counts the outcomes.
struct load_result {
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::mutex mtx;
  std::vector<std::string> errors;
};

void run_load(uint16_t port, int threads, int per_thread, load_result& out,
              std::atomic<int>* started = nullptr) {
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      auto cl = connect(port);
      for (int i = 0; i < per_thread; ++i) {
        if (started)
          ++*started;
        auto text = "cluster text " + std::to_string(t) + " " + std::to_string(i);
        caf::error err;
        if (i % 3 == 0) {
          auto r = cl->embed_batch({text, text + " b"});
          if (!r)
            err = r.error();
          else if (r->rows != 2)
            err = pool::make_error(pool::pool_errc::invalid_input, "wrong row count");
        } else {
          auto r = cl->embed(text);
          if (!r)
            err = r.error();
        }
        if (!err) {
          ++out.ok;
        } else {
          ++out.failed;
          std::lock_guard<std::mutex> guard{out.mtx};
          out.errors.push_back(pool::describe(err));
        }
      }
    });
  for (auto& t : ts)
    t.join();
}

}  // namespace

TEST_CASE("work flows through a worker node and its SIGKILL loses no request",
          "[cluster]") {
  node_process head{
      {"--pool.workers=1", "--fault.compute-delay=5ms", "--pool.request-timeout=60s"}};
  worker_node w1{head.port(), "w1", {"--pool.workers=2", "--fault.compute-delay=5ms"}};
  REQUIRE(w1.wait_for_log("event=joined", 15s));
  auto cl = connect(head.port());
  REQUIRE(wait_status(*cl, 10s, [](const json& st) {
    auto n = node_entry(st, "w1");
    return !n.is_null() && n.at("ready") == 2;
  }));
  load_result load;
  std::atomic<int> started{0};
  auto sender = std::async(std::launch::async,
                           [&] { run_load(head.port(), 4, 60, load, &started); });
  // Kill the worker node once it has done real work.
  REQUIRE(wait_status(*cl, 30s,
                      [](const json& st) { return remote_completed(st, "w1") >= 10; }));
  w1.process().signal(SIGKILL);
  auto killed_at = std::chrono::steady_clock::now();
  REQUIRE(sender.wait_for(60s) == std::future_status::ready);
  auto drained_in = std::chrono::steady_clock::now() - killed_at;
  INFO("errors: " << (load.errors.empty() ? "" : load.errors.front()));
  CHECK(load.ok == 240);
  CHECK(load.failed == 0);
  // Re-dispatch happened at the down message, not at a request timeout (60s).
  CHECK(drained_in < 30s);
  auto st = status_of(*cl);
  CHECK(node_entry(st, "w1").at("state") == "lost");
  CHECK(st.at("ledger").at("in_flight") == 0);
  CHECK(st.at("ledger").at("completed") == 240);
  CHECK(balanced(st));
  CHECK_THAT(head.log(), Catch::Contains("event=worker_died"));
  SECTION("a restarted worker node rejoins and receives work again") {
    worker_node again{head.port(), "w1", {"--pool.workers=2"}};
    REQUIRE(again.wait_for_log("event=joined", 15s));
    REQUIRE(wait_status(
        *cl, 10s, [](const json& s) { return node_entry(s, "w1").at("state") == "up"; }));
    auto before = remote_completed(status_of(*cl), "w1");
    load_result more;
    run_load(head.port(), 2, 20, more);
    CHECK(more.ok == 40);
    CHECK(remote_completed(status_of(*cl), "w1") > before);
    // The slots of the lost node were reused, not piled up.
    CHECK(node_entry(status_of(*cl), "w1").at("workers") == 2);
  }
}

TEST_CASE("a frozen worker node (SIGSTOP) is detected within the heartbeat bound",
          "[cluster]") {
  // Bound: heartbeat.timeout + heartbeat.interval + one supervisor tick (100ms).
  node_process head{
      {"--pool.workers=1", "--heartbeat.interval=200ms", "--heartbeat.timeout=1s"}};
  worker_node w1{head.port(), "frozen", {"--pool.workers=1"}};
  REQUIRE(w1.wait_for_log("event=joined", 15s));
  auto cl = connect(head.port());
  REQUIRE(wait_status(*cl, 10s, [](const json& st) {
    auto n = node_entry(st, "frozen");
    return !n.is_null() && n.at("ready") == 1;
  }));
  w1.process().signal(SIGSTOP);
  auto stopped_at = std::chrono::steady_clock::now();
  REQUIRE(wait_status(*cl, 10s, [](const json& st) {
    return node_entry(st, "frozen").at("state") == "lost";
  }));
  auto detected_in = std::chrono::steady_clock::now() - stopped_at;
  CHECK(detected_in < 1300ms + 1500ms);  // the bound plus polling and scheduling slack
  // The head keeps serving with its own worker.
  CHECK(cl->embed("still serving"));
  w1.process().signal(SIGCONT);
}

TEST_CASE("a worker node on SIGTERM finishes its work, leaves and exits 0", "[cluster]") {
  node_process head{{"--pool.workers=1", "--fault.compute-delay=20ms"}};
  worker_node w1{
      head.port(), "leaver", {"--pool.workers=2", "--fault.compute-delay=20ms"}};
  REQUIRE(w1.wait_for_log("event=joined", 15s));
  auto cl = connect(head.port());
  REQUIRE(wait_status(*cl, 10s, [](const json& st) {
    auto n = node_entry(st, "leaver");
    return !n.is_null() && n.at("ready") == 2;
  }));
  load_result load;
  auto sender =
      std::async(std::launch::async, [&] { run_load(head.port(), 4, 25, load); });
  REQUIRE(wait_status(
      *cl, 30s, [](const json& st) { return remote_completed(st, "leaver") >= 5; }));
  w1.process().signal(SIGTERM);
  auto exit = w1.process().wait_exit(30s);
  REQUIRE(exit);
  CHECK(exit->exited);
  CHECK(exit->code == 0);
  REQUIRE(sender.wait_for(60s) == std::future_status::ready);
  CHECK(load.ok == 100);
  CHECK(load.failed == 0);
  auto st = status_of(*cl);
  CHECK(node_entry(st, "leaver").at("state") == "left");
  CHECK(balanced(st));
  CHECK_THAT(w1.log(), Catch::Contains("event=left"));
}

TEST_CASE("a worker node whose supervisor goes away rejoins when it returns",
          "[cluster]") {
  uint16_t port = 0;
  std::unique_ptr<worker_node> w1;
  {
    node_process head{{"--pool.workers=1"}};
    port = head.port();
    w1 = std::make_unique<worker_node>(port, "patient", std::vector<std::string>{});
    REQUIRE(w1->wait_for_log("event=joined", 15s));
    head.process().signal(SIGKILL);
    REQUIRE(w1->wait_for_log("event=supervisor_lost", 15s));
  }
  node_process head{{"--pool.workers=1", "--node.port=" + std::to_string(port)}};
  auto cl = connect(head.port());
  CHECK(wait_status(*cl, 20s, [](const json& st) {
    auto n = node_entry(st, "patient");
    return !n.is_null() && n.at("state") == "up";
  }));
}

TEST_CASE("a non-loopback bind without TLS is refused naming the key", "[cluster][tls]") {
  temp_dir dir;
  auto r = pool::test::run_command(
      {EMBEDPOOL_NODE_BIN, "--node.host=0.0.0.0", "--node.port=0", "--log.console=false",
       "--log.file=" + (dir.path() / "n.log").string()},
      20s);
  CHECK(r.status.exited);
  CHECK(r.status.code == 2);
  CHECK_THAT(r.err, Catch::Contains("node.host"));
  CHECK_THAT(r.err, Catch::Contains("node.allow-insecure"));
}

namespace {

pool::test::run_result cli_embed(uint16_t port, std::vector<std::string> tls_args) {
  std::vector<std::string> argv = {EMBEDPOOL_CLI_BIN, "--port=" + std::to_string(port),
                                   "--timeout=10"};
  argv.insert(argv.end(), tls_args.begin(), tls_args.end());
  argv.push_back("embed");
  argv.push_back("over tls");
  return pool::test::run_command(argv, 30s);
}

}  // namespace

TEST_CASE("with mutual TLS only peers with a CA-signed certificate are served",
          "[cluster][tls]") {
  test_pki pki;
  auto node_args = pki.args("node");
  node_args.push_back("--pool.workers=1");
  node_process head{node_args};
  auto good = cli_embed(head.port(), pki.args("client"));
  INFO("good client stderr: " << good.err);
  CHECK(good.status.code == 0);
  CHECK_THAT(good.out, Catch::StartsWith("{\"dim\":384"));
  auto anonymous = cli_embed(head.port(), {});
  CHECK(anonymous.status.code != 0);
  CHECK_THAT(anonymous.err, Catch::Contains("error: unavailable"));
  auto rogue = cli_embed(head.port(), {"--tls.certificate=" + pki.path("rogue.pem"),
                                       "--tls.key=" + pki.path("rogue.key"),
                                       "--tls.ca-file=" + pki.path("ca.pem")});
  CHECK(rogue.status.code != 0);
  CHECK_THAT(rogue.err, Catch::Contains("error: unavailable"));
  // A key that does not match its certificate is refused before connecting.
  auto mismatch = cli_embed(head.port(), {"--tls.certificate=" + pki.path("client.pem"),
                                          "--tls.key=" + pki.path("node.key"),
                                          "--tls.ca-file=" + pki.path("ca.pem")});
  CHECK(mismatch.status.code != 0);
  CHECK_THAT(mismatch.err, Catch::Contains("tls.key"));
  // The node kept serving the good client throughout.
  auto again = cli_embed(head.port(), pki.args("client"));
  CHECK(again.status.code == 0);
  SECTION("a worker node joins over TLS and serves") {
    auto wargs = pki.args("worker");
    wargs.push_back("--pool.workers=1");
    worker_node w{head.port(), "tls-worker", wargs};
    REQUIRE(w.wait_for_log("event=joined", 20s));
    pool::client_options opts;
    opts.port = head.port();
    opts.tls.certificate = pki.path("client.pem");
    opts.tls.key = pki.path("client.key");
    opts.tls.ca_file = pki.path("ca.pem");
    auto cl = pool::client::connect(opts);
    REQUIRE(cl);
    for (int i = 0; i < 20; ++i)
      REQUIRE((*cl)->embed("tls text " + std::to_string(i)));
    CHECK(remote_completed(status_of(**cl), "tls-worker") > 0);
  }
}

TEST_CASE("a node with a key that does not match its certificate refuses to start",
          "[cluster][tls]") {
  test_pki pki;
  temp_dir dir;
  auto r = pool::test::run_command(
      {EMBEDPOOL_NODE_BIN, "--node.port=0", "--log.console=false",
       "--log.file=" + (dir.path() / "n.log").string(),
       "--tls.certificate=" + pki.path("node.pem"), "--tls.key=" + pki.path("client.key"),
       "--tls.ca-file=" + pki.path("ca.pem")},
      20s);
  CHECK(r.status.code == 2);
  CHECK_THAT(r.err, Catch::Contains("tls.key"));
}

TEST_CASE("the client fails over to the next node when the first is unreachable",
          "[cluster][client]") {
  node_process node{{"--pool.workers=1"}};
  uint16_t dead_port = 0;
  {
    // A port that was just free: nothing listens there now.
    node_process gone{{"--pool.workers=1"}};
    dead_port = gone.port();
    gone.process().signal(SIGKILL);
    REQUIRE(gone.process().wait_exit(10s));
  }
  pool::client_options opts;
  opts.port = dead_port;
  opts.fallbacks = {"127.0.0.1:" + std::to_string(node.port())};
  auto cl = pool::client::connect(opts);
  REQUIRE(cl);
  CHECK((*cl)->embed("served by the fallback"));
  pool::client_options none;
  none.port = dead_port;
  auto refused = pool::client::connect(none);
  REQUIRE_FALSE(refused);
  CHECK(pool::pool_code(refused.error()) == pool::pool_errc::unavailable);
}

TEST_CASE("node.allow-insecure permits a non-loopback bind and logs a warning",
          "[cluster][tls]") {
  // Binds all interfaces; the test only talks to 127.0.0.1.
  node_process node{{"--node.host=0.0.0.0", "--node.allow-insecure", "--pool.workers=1"}};
  CHECK_THAT(node.log(), Catch::Contains("event=insecure_bind"));
  auto cl = connect(node.port());
  CHECK(cl->embed("loopback still works"));
}

#ifdef EMBEDPOOL_LOADGEN_BIN
TEST_CASE("the load generator takes the same [tls] keys as the node", "[cluster][tls]") {
  test_pki pki;
  auto node_args = pki.args("node");
  node_args.push_back("--pool.workers=1");
  node_process head{node_args};
  std::vector<std::string> argv = {
      EMBEDPOOL_LOADGEN_BIN, "--port=" + std::to_string(head.port()),
      "--mode=embed",        "--window=4",
      "--duration=1",        "--text-bytes=64",
      "--status-interval=0"};
  for (auto& a : pki.args("client"))
    argv.push_back(a);
  auto r = pool::test::run_command(argv, 60s);
  INFO("stderr: " << r.err);
  REQUIRE(r.status.code == 0);
  auto summary = json::parse(r.out);
  CHECK(summary.at("completed").get<uint64_t>() > 0);
  CHECK(summary.at("missing") == 0);
}
#endif
