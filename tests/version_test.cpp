// Versions and the protocol handshake: --version of the binaries, `version`
// and `protocol` in the status, and a peer of another protocol version
// refused at connect with an error naming both versions (never a reply it
// would mis-read).
#include <atomic>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "pool/client.hpp"
#include "pool/error.hpp"
#include "pool/protocol.hpp"
#include "pool/version.hpp"
#include "process_helpers.hpp"

namespace {

using namespace std::chrono_literals;
using pool::test::node_process;
using pool::test::run_command;

struct peer_config : caf::actor_system_config {
  peer_config() {
    pool::add_message_types(*this);
    load<caf::io::middleman>();
    set("scheduler.max-threads", size_t{2});
  }
};

/// A published stand-in for a node: `hello` answers the hello (or, empty,
/// leaves it to the default handler, which answers like a gateway from before
/// the handshake: `invalid_input: unsupported message ...`).
struct fake_node {
  using hello_answer =
      std::function<caf::result<pool::hello_atom, uint32_t, std::string>(uint32_t)>;

  fake_node(caf::actor_system& sys, hello_answer hello) {
    // `hello` is passed as a spawn argument: CAF 0.17 binds a reference to an
    // empty argument tuple for a function spawned without any (UBSan objects).
    actor = sys.spawn(
        [](caf::event_based_actor* self, hello_answer answer) -> caf::behavior {
          self->set_default_handler([](caf::scheduled_actor*,
                                       caf::message_view&) -> caf::result<caf::message> {
            return pool::make_error(pool::pool_errc::invalid_input,
                                    "unsupported message (hello, 1); expected (embed, "
                                    "text [, task [, model]]), ...");
          });
          if (!answer)
            return {[](pool::status_atom) { return pool::pool_status{}; }};
          return {
              [answer](pool::hello_atom, uint32_t protocol) { return answer(protocol); },
          };
        },
        std::move(hello));
    auto bound = sys.middleman().publish(actor, 0, "127.0.0.1");
    REQUIRE(bound);
    port = *bound;
  }

  /// The actor system waits for every actor when it is destroyed.
  ~fake_node() { caf::anon_send_exit(actor, caf::exit_reason::kill); }

  caf::actor actor;
  uint16_t port = 0;
};

caf::expected<std::unique_ptr<pool::client>> connect(uint16_t port) {
  pool::client_options opts;
  opts.port = port;
  opts.timeout = 10s;
  return pool::client::connect(opts);
}

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE(
    "every binary prints its version, git revision, protocol, CAF and OpenBLAS "
    "versions",
    "[version]") {
  for (std::string bin : {EMBEDPOOL_NODE_BIN, EMBEDPOOL_CLI_BIN}) {
    auto result = run_command({bin, "--version"}, 30s);
    INFO(bin << " --version printed: " << result.out << result.err);
    REQUIRE(result.status.exited);
    CHECK(result.status.code == 0);
    auto lines = pool::test::split_lines(result.out);
    REQUIRE(lines.size() == 4);
    auto program = bin.substr(bin.rfind('/') + 1);
    CHECK(lines[0] == program + " " + pool::version_string());
    CHECK(contains(lines[0], std::string{" "} + pool::project_version() + " (git "));
    CHECK(lines[1] == "protocol " + std::to_string(pool::protocol_version));
    CHECK(lines[2] == "CAF " + pool::caf_version());
    CHECK(lines[2].rfind("CAF 0.17.", 0) == 0);
    CHECK(lines[3].rfind("OpenBLAS ", 0) == 0);
  }
}

TEST_CASE("the status carries the node's version and protocol, also in the CLI's JSON",
          "[version][status]") {
  node_process node{{}};
  auto cl = connect(node.port());
  REQUIRE(cl);
  auto st = (*cl)->status();
  REQUIRE(st);
  CHECK(st->version == pool::version_string());
  CHECK(st->protocol == pool::protocol_version);
  auto result = run_command(
      {EMBEDPOOL_CLI_BIN, "--port=" + std::to_string(node.port()), "status"}, 30s);
  REQUIRE(result.status.code == 0);
  auto json = nlohmann::json::parse(result.out);
  CHECK(json.at("version") == pool::version_string());
  CHECK(json.at("protocol") == pool::protocol_version);
}

TEST_CASE(
    "a node answers the hello of its own protocol with its version, and refuses "
    "another protocol naming both",
    "[version][handshake]") {
  node_process node{{}};
  peer_config cfg;
  caf::actor_system sys{cfg};
  auto gateway = sys.middleman().remote_actor("127.0.0.1", node.port());
  REQUIRE(gateway);
  SECTION("same protocol") {
    auto version = pool::say_hello(sys, *gateway, 10s);
    REQUIRE(version);
    CHECK(*version == pool::version_string());
  }
  SECTION("a newer peer") {
    caf::scoped_actor self{sys};
    caf::error err;
    self->request(*gateway, 10s, pool::hello_atom::value, pool::protocol_version + 1)
        .receive([](pool::hello_atom, uint32_t, std::string&) {},
                 [&](caf::error& e) { err = std::move(e); });
    REQUIRE(err);
    CHECK(pool::pool_code(err) == pool::pool_errc::protocol_mismatch);
    auto msg = pool::error_message(err);
    INFO(msg);
    CHECK(contains(msg, "protocol " + std::to_string(pool::protocol_version)));
    CHECK(contains(msg, "protocol " + std::to_string(pool::protocol_version + 1)));
    CHECK(node.wait_for_log("event=protocol_mismatch", 5s));
  }
}

TEST_CASE(
    "the client refuses a node of another protocol at connect, naming both "
    "versions",
    "[version][handshake][client]") {
  peer_config cfg;
  caf::actor_system sys{cfg};
  SECTION("an older node that does not know the hello") {
    fake_node old_node{sys, nullptr};
    auto cl = connect(old_node.port);
    REQUIRE_FALSE(cl);
    CHECK(pool::pool_code(cl.error()) == pool::pool_errc::protocol_mismatch);
    auto msg = pool::error_message(cl.error());
    INFO(msg);
    CHECK(contains(msg, "unversioned protocol"));
    CHECK(
        contains(msg, "this client protocol " + std::to_string(pool::protocol_version)));
    CHECK(contains(msg, "127.0.0.1:" + std::to_string(old_node.port)));
  }
  SECTION("a newer node that refuses the hello") {
    fake_node newer{
        sys, [](uint32_t peer) -> caf::result<pool::hello_atom, uint32_t, std::string> {
          return pool::make_error(
              pool::pool_errc::protocol_mismatch,
              "this node speaks embedpool protocol 7 (embedpool 9.0.0), the "
              "peer protocol " +
                  std::to_string(peer));
        }};
    auto cl = connect(newer.port);
    REQUIRE_FALSE(cl);
    CHECK(pool::pool_code(cl.error()) == pool::pool_errc::protocol_mismatch);
    auto msg = pool::error_message(cl.error());
    INFO(msg);
    CHECK(contains(msg, "protocol 7"));
    CHECK(contains(msg, "the peer protocol " + std::to_string(pool::protocol_version)));
  }
  SECTION("a node that answers the hello with another protocol") {
    fake_node other{sys,
                    [](uint32_t) -> caf::result<pool::hello_atom, uint32_t, std::string> {
                      return {pool::hello_atom::value, 7u, std::string{"9.0.0"}};
                    }};
    auto cl = connect(other.port);
    REQUIRE_FALSE(cl);
    CHECK(pool::pool_code(cl.error()) == pool::pool_errc::protocol_mismatch);
    auto msg = pool::error_message(cl.error());
    INFO(msg);
    CHECK(contains(msg, "the node speaks embedpool protocol 7 (embedpool 9.0.0)"));
    CHECK(
        contains(msg, "this client protocol " + std::to_string(pool::protocol_version)));
  }
}

TEST_CASE(
    "a peer that registered the protocol types under other names cannot decode "
    "a status: an error rather than a garbled reply",
    "[version][handshake]") {
  node_process node{{}};
  // What a peer built before the type names carried the protocol registers.
  caf::actor_system_config cfg;
  cfg.add_message_type<pool::worker_status>("pool.worker_status");
  cfg.add_message_type<std::vector<pool::worker_status>>(
      "std::vector<pool.worker_status>");
  cfg.add_message_type<pool::node_status>("pool.node_status");
  cfg.add_message_type<std::vector<pool::node_status>>("std::vector<pool.node_status>");
  cfg.add_message_type<pool::ledger_counters>("pool.ledger");
  cfg.add_message_type<pool::pool_status>("pool.status");
  cfg.load<caf::io::middleman>();
  cfg.set("scheduler.max-threads", size_t{2});
  caf::actor_system sys{cfg};
  auto gateway = sys.middleman().remote_actor("127.0.0.1", node.port());
  REQUIRE(gateway);
  caf::scoped_actor self{sys};
  bool decoded = false;
  caf::error err;
  self->request(*gateway, 3s, pool::status_atom::value)
      .receive([&](pool::pool_status&) { decoded = true; },
               [&](caf::error& e) { err = std::move(e); });
  INFO("the request ended with " << caf::to_string(err));
  CHECK_FALSE(decoded);
  // CAF cannot decode the reply's "pool.v1.status": the request fails as a
  // whole instead of delivering a mis-read struct.
  CHECK(err == caf::sec::unexpected_response);
}

TEST_CASE(
    "a client sends embeds one by one to a node of an earlier release that does not "
    "know lists of embeds",
    "[version][client]") {
  peer_config cfg;
  caf::actor_system sys{cfg};
  // The gateway of an earlier release of protocol 1: the hello and single
  // embeds (answered 50 ms later with the text's length as their one value);
  // a list of embeds is an unsupported message to it.
  struct old_gateway_probe {
    std::atomic<int> lists{0};
    std::atomic<int> embeds{0};
  };
  auto probe = std::make_shared<old_gateway_probe>();
  using answer_later = std::pair<caf::response_promise, pool::matrix>;
  auto old_gateway = sys.spawn(
      [](caf::event_based_actor* self,
         std::shared_ptr<old_gateway_probe> p) -> caf::behavior {
        auto later = std::make_shared<std::vector<answer_later>>();
        self->set_default_handler(
            [p](caf::scheduled_actor*, caf::message_view&) -> caf::result<caf::message> {
              ++p->lists;
              return pool::make_error(pool::pool_errc::invalid_input,
                                      "unsupported message; expected (embed, text [, "
                                      "task [, model [, request_id]]]), ...");
            });
        return {
            [](pool::hello_atom, uint32_t) {
              return caf::make_message(pool::hello_atom::value, pool::protocol_version,
                                       std::string{"0.0.9 (an earlier release)"});
            },
            [self, p, later](pool::embed_atom, std::string& text,
                             std::string&) -> caf::result<pool::matrix> {
              ++p->embeds;
              pool::matrix m;
              m.rows = 1;
              m.dim = 1;
              m.values = {static_cast<float>(text.size())};
              later->emplace_back(self->make_response_promise(), std::move(m));
              if (later->size() == 1)
                self->delayed_send(self, 50ms, pool::answer_atom::value);
              return caf::delegated<pool::matrix>{};
            },
            [later](pool::answer_atom) {
              for (auto& [rp, m] : std::exchange(*later, {}))
                rp.deliver(std::move(m));
            },
        };
      },
      probe);
  auto port = sys.middleman().publish(old_gateway, 0, "127.0.0.1");
  REQUIRE(port);
  pool::client_options opts;
  opts.port = *port;
  opts.window = 64;
  opts.timeout = 10s;
  auto cl = pool::client::connect(opts);
  REQUIRE(cl);
  constexpr size_t calls = 20;
  std::vector<std::future<caf::expected<std::vector<float>>>> answers;
  for (size_t i = 0; i < calls; ++i)
    answers.push_back((*cl)->embed_future(std::string(i + 1, 'a')));
  for (size_t i = 0; i < calls; ++i) {
    INFO("call " << i);
    auto x = answers[i].get();
    REQUIRE(x);
    CHECK(*x == std::vector<float>{static_cast<float>(i + 1)});
  }
  // The client tried a list, learned the node does not know them, and sent
  // every call of it alone; each call was answered once.
  CHECK(probe->lists.load() >= 1);
  CHECK(probe->embeds.load() == static_cast<int>(calls));
  auto stats = (*cl)->stats();
  CHECK(stats.sent == calls);
  CHECK(stats.answered == calls);
  CHECK(stats.late_answers == 0);
  // Later calls go alone at once.
  auto lists_before = probe->lists.load();
  std::vector<std::future<caf::expected<std::vector<float>>>> more;
  for (size_t i = 0; i < calls; ++i)
    more.push_back((*cl)->embed_future("later"));
  for (auto& f : more)
    CHECK(f.get());
  CHECK(probe->lists.load() == lists_before);
  cl->reset();
  caf::anon_send_exit(old_gateway, caf::exit_reason::kill);
}
