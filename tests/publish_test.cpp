// The gateway over a real middleman on 127.0.0.1: published, reachable, and
// republished on the same port after it dies.
#include <catch2/catch.hpp>

#include <future>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors.hpp"
#include "pool/client.hpp"

using namespace pool;
using namespace std::chrono_literals;

namespace {

/// Embeds each text as (length, 1, 0, 0).
class length_embedder : public embedder {
 public:
  std::string name() const override { return "length"; }
  size_t dim() const override { return 4; }
  size_t weights_bytes() const override { return 0; }
  size_t worker_bytes(uint32_t texts) const override {
    return texts * dim() * sizeof(float);
  }
  void embed(const std::vector<std::string_view>& texts, const std::string&,
             float* out) const override {
    for (size_t i = 0; i < texts.size(); ++i) {
      out[4 * i] = static_cast<float>(texts[i].size());
      out[4 * i + 1] = 1;
      out[4 * i + 2] = 0;
      out[4 * i + 3] = 0;
    }
  }
};

struct node_config_fixture : caf::actor_system_config {
  node_config_fixture() {
    pool::add_message_types(*this);
    load<caf::io::middleman>();
    set("scheduler.max-threads", size_t{2});
  }
};

}  // namespace

TEST_CASE("a killed gateway is republished on the same port and serves again",
          "[gateway][network]") {
  node_config_fixture cfg;
  caf::actor_system sys{cfg};
  std::promise<uint16_t> bound;
  detail::supervisor_config sc;
  sc.pool.workers = 1;
  sc.heartbeat.interval = 100ms;
  sc.heartbeat.timeout = 2s;
  sc.log.stats_interval = caf::timespan{0};
  sc.model_name = "length";
  sc.dim = 4;
  detail::worker_config wc;
  wc.model = std::make_shared<length_embedder>();
  sc.make_worker = [wc](caf::local_actor* self, uint32_t) {
    return detail::spawn_worker(self->system(), wc, true);
  };
  detail::root_config rc;
  rc.models.push_back(sc);
  rc.publish = true;
  rc.host = "127.0.0.1";
  rc.port = 0;
  rc.on_listening = [&bound](uint16_t port) { bound.set_value(port); };
  auto root = detail::spawn_root(sys, rc);
  auto fut = bound.get_future();
  REQUIRE(fut.wait_for(10s) == std::future_status::ready);
  auto port = fut.get();
  REQUIRE(port != 0);

  client_options opts;
  opts.port = port;
  opts.timeout = 10s;
  {
    auto cl = client::connect(opts);
    REQUIRE(cl);
    auto v = (*cl)->embed("hello");
    REQUIRE(v);
    CHECK(v->at(0) == 5.0f);
  }
  caf::scoped_actor self{sys};
  caf::actor old_gateway;
  self->request(root, 5s, gateway_atom::value)
      .receive([&](caf::actor& gw) { old_gateway = gw; }, [](caf::error&) {});
  REQUIRE(old_gateway);
  // A gateway that dies anyway (here: the root's own kill; no other
  // sender's exit message gets in) is replaced and republished.
  caf::send_as(caf::actor_cast<caf::actor>(root), old_gateway,
               caf::exit_msg{root.address(), caf::exit_reason::kill});
  // Bounded wait until the root reports a different gateway.
  caf::actor new_gateway;
  for (int i = 0; i < 100 && (!new_gateway || new_gateway == old_gateway); ++i) {
    self->request(root, 5s, gateway_atom::value)
        .receive([&](caf::actor& gw) { new_gateway = gw; }, [](caf::error&) {});
    if (!new_gateway || new_gateway == old_gateway)
      std::this_thread::sleep_for(50ms);
  }
  REQUIRE(new_gateway);
  CHECK(new_gateway != old_gateway);
  // The new gateway answers on the same port (bounded retries while it is
  // being republished).
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    auto cl = client::connect(opts);
    if (cl) {
      auto v = (*cl)->embed("again!");
      served = v && v->at(0) == 6.0f;
    }
    if (!served)
      std::this_thread::sleep_for(100ms);
  }
  CHECK(served);
  self->send(root, drain_atom::value);
  self->wait_for(root);
}
