// Several models in one node, over loopback: requests and status name a model,
// each model answers with its own embedder and keeps its own ledger, an
// unknown model is `invalid_input` naming it, and the memory budget is
// checked before the node starts.
#include <future>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "pool/client.hpp"
#include "pool/config.hpp"
#include "pool/embedder.hpp"
#include "pool/make_embedder.hpp"
#include "pool/error.hpp"
#include "process_helpers.hpp"

namespace {

using namespace std::chrono_literals;
using pool::test::node_process;

std::unique_ptr<pool::client> connect_to(const node_process& node) {
  pool::client_options opts;
  opts.port = node.port();
  opts.timeout = std::chrono::seconds(20);
  auto cl = pool::client::connect(opts);
  if (!cl)
    throw std::runtime_error("cannot connect: " + pool::describe(cl.error()));
  return std::move(*cl);
}

/// The embedding of `text` by a hash model of `dim`, computed in this process
/// (the hash embedder is bit-exact, so the node must give the same floats).
std::vector<float> reference(uint32_t dim, const std::string& text) {
  pool::model_config cfg;
  cfg.dim = dim;
  auto model = pool::make_embedder(cfg);
  REQUIRE(model);
  std::vector<float> out(dim);
  (*model)->embed({text}, "", out.data());
  return out;
}

const std::vector<std::string> three_models = {
    "--pool.workers=1",        "--model.name=default", "--models.names=small,big",
    "--models.small.dim=64",   "--models.big.dim=512", "--models.big.workers=2",
    "--log.stats-interval=0s",
};

}  // namespace

TEST_CASE("Requests name a model and get that model's embedding", "[models]") {
  node_process node{three_models};
  auto cl = connect_to(node);
  const std::string text = "the cat sat on the mat";
  SECTION("embed") {
    CHECK(cl->embed(text).value() == reference(384, text));
    CHECK(cl->embed(text, "", "default").value() == reference(384, text));
    CHECK(cl->embed(text, "", "small").value() == reference(64, text));
    CHECK(cl->embed(text, "", "big").value() == reference(512, text));
  }
  SECTION("batch") {
    auto m = cl->embed_batch({"one", text}, "", "small");
    REQUIRE(m);
    CHECK(m->rows == 2);
    CHECK(m->dim == 64);
    std::vector<float> second(m->values.begin() + 64, m->values.end());
    CHECK(second == reference(64, text));
  }
  SECTION("the CLI's --model") {
    auto run = pool::test::run_command(
        {EMBEDPOOL_CLI_BIN, "--port=" + std::to_string(node.port()), "--model=big",
         "embed", text},
        20s);
    REQUIRE(run.status.code == 0);
    auto json = nlohmann::json::parse(run.out);
    CHECK(json["dim"] == 512);
  }
}

TEST_CASE("An unknown model is invalid_input naming it", "[models]") {
  node_process node{three_models};
  auto cl = connect_to(node);
  auto e = cl->embed("x", "", "medium");
  REQUIRE_FALSE(e);
  CHECK(pool::pool_code(e.error()) == pool::pool_errc::invalid_input);
  CHECK_THAT(pool::error_message(e.error()), Catch::Contains("\"medium\""));
  CHECK_THAT(pool::error_message(e.error()), Catch::Contains("default, small, big"));
  auto b = cl->embed_batch({"x"}, "", "medium");
  REQUIRE_FALSE(b);
  CHECK(pool::pool_code(b.error()) == pool::pool_errc::invalid_input);
  auto s = cl->status("medium");
  REQUIRE_FALSE(s);
  CHECK_THAT(pool::error_message(s.error()), Catch::Contains("\"medium\""));
  // Nothing was accepted anywhere.
  for (const std::string model : {"default", "small", "big"})
    CHECK(cl->status(model).value().ledger.accepted == 0);
}

TEST_CASE("Each model reports its own status, workers and ledger", "[models]") {
  node_process node{three_models};
  auto cl = connect_to(node);
  for (int i = 0; i < 5; ++i)
    REQUIRE(cl->embed("text " + std::to_string(i), "", "small"));
  REQUIRE(cl->embed_batch({"a", "b"}, "", "big"));
  auto plain = cl->status().value();
  auto def = cl->status("default").value();
  auto small = cl->status("small").value();
  auto big = cl->status("big").value();
  CHECK(plain.dim == 384);
  CHECK(def.dim == 384);
  CHECK(small.dim == 64);
  CHECK(big.dim == 512);
  const std::vector<std::string> names = {"default", "small", "big"};
  CHECK(def.models == names);
  CHECK(big.models == names);
  CHECK(def.workers.size() == 1);
  CHECK(small.workers.size() == 1);  // inherits pool.workers
  CHECK(big.workers.size() == 2);
  CHECK(def.ledger.accepted == 0);
  CHECK(small.ledger.completed == 5);
  CHECK(big.ledger.completed == 1);
  // One budget for the node: every model reports the same total.
  CHECK(small.memory_used_bytes == big.memory_used_bytes);
  CHECK(small.memory_used_bytes > 0);
  SECTION("SIGTERM drains every model and exits 0") {
    node.process().signal(SIGTERM);
    auto st = node.process().wait_exit(20s);
    REQUIRE(st);
    CHECK(st->code == 0);
    CHECK_THAT(node.log(), Catch::Contains("event=model_drained model=small"));
    CHECK_THAT(node.log(), Catch::Contains("event=model_drained model=big"));
  }
}

TEST_CASE("A memory budget too small for the minimum workers refuses to start",
          "[models][budget]") {
  // Three hash models of 384 dims: 6 MiB of weights and 5.6 MiB per worker each.
  auto run = pool::test::run_command(
      {EMBEDPOOL_NODE_BIN, "--node.port=0", "--log.file=", "--pool.workers=1",
       "--pool.memory-budget=30", "--models.names=a,b"},
      20s);
  CHECK(run.status.code == 2);
  CHECK_THAT(run.err, Catch::Contains("pool.memory-budget: 30 MiB cannot hold"));
  CHECK_THAT(run.err, Catch::Contains("3 model(s)"));
}

TEST_CASE("Real workers scale up under a drill load and are evicted when idle",
          "[scaling]") {
  node_process node{{"--pool.workers=1", "--pool.max-workers=2",
                     "--pool.scale-up-queue-depth=1", "--pool.scale-up-window=200ms",
                     "--pool.idle-cooldown=500ms", "--fault.compute-delay=20ms",
                     "--log.stats-interval=0s"}};
  auto cl = connect_to(node);
  std::vector<std::future<caf::expected<std::vector<float>>>> calls;
  for (int i = 0; i < 40; ++i)
    calls.push_back(cl->embed_future("drill " + std::to_string(i)));
  CHECK(node.wait_for_log("event=scale_up reason=queue_depth", 10s));
  for (auto& c : calls)
    CHECK(static_cast<bool>(c.get()));  // nothing accepted is lost
  CHECK(node.wait_for_log("event=scale_down reason=idle", 10s));
  auto st = cl->status().value();
  CHECK(st.workers_spawned == 2);
  CHECK(st.workers_evicted == 1);
  CHECK(st.max_workers == 2);
  CHECK(st.ledger.completed == 40);
  CHECK(st.ledger.accepted == st.ledger.completed);
}
