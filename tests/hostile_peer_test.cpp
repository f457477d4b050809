// The trust boundary, tried from the outside: a raw BASP peer on 127.0.0.1
// sends kill, error, drain, submit, status, join and leave frames to every
// actor id of a real node, and joins and leaves as a fake worker node. Only
// the gateway ever answers it, the node keeps serving a legitimate client
// that stays connected, and nothing passes the gateway's checks.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include <caf/io/middleman.hpp>

#include "pool/client.hpp"
#include "process_helpers.hpp"
#include "raw_basp_peer.hpp"
#include "status_helpers.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using pool::test::child_process;
using pool::test::connect_client;
using pool::test::node_process;
using pool::test::peer_system;
using pool::test::raw_basp_peer;
using pool::test::received_message;
using pool::test::redirections;
using pool::test::slurp;
using pool::test::temp_dir;

using pool::test::balanced;
using pool::test::node_entry;
using pool::test::status_of;
using pool::test::wait_status;

namespace {

std::string bounded_text(std::string text) {
  if (text.size() > 120)
    text.resize(120);
  return text;
}

/// Every frame a hostile peer might try, as (message, sent as a request).
std::vector<std::pair<caf::message, bool>> attack_frames() {
  using namespace pool;
  std::vector<std::pair<caf::message, bool>> result;
  auto add = [&](caf::message m, bool request) {
    result.emplace_back(std::move(m), request);
  };
  add(caf::make_message(caf::exit_msg{caf::actor_addr{}, caf::exit_reason::kill}), false);
  add(caf::make_message(
          caf::exit_msg{caf::actor_addr{}, caf::exit_reason::user_shutdown}),
      false);
  add(caf::make_message(caf::make_error(caf::sec::runtime_error)), false);
  add(caf::make_message(pool::make_error(pool_errc::worker_failed, "forged")), false);
  add(caf::make_message(drain_atom::value), false);
  add(caf::make_message(drain_atom::value), true);
  add(caf::make_message(tick_atom::value), false);
  // Submissions that skip the gateway's checks: empty, oversized, invalid
  // UTF-8; in today's form and in the old one.
  std::vector<std::string> bad{"", std::string(4096, 'x'), std::string("\xff\xfe")};
  add(caf::make_message(submit_atom::value, uint64_t{1}, uint8_t{0}, bad, std::string{}),
      true);
  add(caf::make_message(submit_atom::value, uint8_t{1}, bad, std::string{}), true);
  add(caf::make_message(status_atom::value), true);
  add(caf::make_message(join_atom::value, std::string{"evil"}, std::vector<caf::actor>{}),
      true);
  add(caf::make_message(leave_atom::value, std::string{"w1"}), true);
  add(caf::make_message(answer_atom::value, uint64_t{1}, pool::matrix{}), false);
  return result;
}

}  // namespace

TEST_CASE(
    "kill, error, drain, submit, status, join and leave frames to every actor id "
    "stop nothing and reach nothing but the gateway",
    "[security][hostile]") {
  node_process node{{"--pool.workers=1", "--pool.max-text-bytes=1024"}};
  auto cl = connect_client(node.port());
  REQUIRE(cl->embed("before the attack"));

  peer_system peer;
  raw_basp_peer raw{*peer.sys};
  raw.connect(node.port());
  REQUIRE(raw.published_actor() != 0);
  auto gateway = raw.published_actor();
  uint64_t request = 1;
  size_t frames = 0;
  for (uint64_t id = 1; id <= 64; ++id) {
    for (auto& [msg, is_request] : attack_frames()) {
      raw.send(id, msg, /*source=*/900, is_request ? request++ : 0);
      ++frames;
    }
  }
  INFO("frames sent: " << frames);
  // Everything that comes back within a few seconds, from whom. Besides
  // replies, CAF's middleman asks a new node's SpawnServ for its name: a
  // request to a named actor, not an answer to the peer.
  auto received = raw.read_until(std::chrono::steady_clock::now() + 3s);
  std::set<uint64_t> sources;
  size_t replies = 0;
  for (auto& r : received) {
    if (!r.is_response() && (r.flags & 0x01) != 0)
      continue;
    ++replies;
    if (sources.insert(r.source_actor).second)
      UNSCOPED_INFO("first message from actor "
                    << r.source_actor << ": " << bounded_text(caf::to_string(r.content)));
  }
  INFO("messages from the node: " << replies);
  for (auto s : sources) {
    INFO("a message came from actor " << s << "; the gateway is " << gateway);
    CHECK((s == gateway || s == 0));  // 0: CAF's bounce of a request to no actor
  }
  CHECK(sources.count(gateway) == 1);  // it answered the requests it got
  CHECK(raw.open());                   // the node did not hang up on it either

  // The node still serves, to the same client, which was never cut off.
  REQUIRE_FALSE(node.process().poll_exit().has_value());
  auto after = cl->embed("after the attack");
  REQUIRE(after);
  CHECK(cl->connected());
  CHECK(cl->stats().lost == 0);
  auto st = status_of(*cl);
  CHECK(st.at("draining") == false);
  CHECK(balanced(st));
  // Nothing bypassed validation: the two legitimate embeds are all that was
  // ever accepted.
  CHECK(st.at("ledger").at("accepted") == 2);
  CHECK(st.at("ledger").at("completed") == 2);
  // The refusals are counted and logged at most once a second, with the peer.
  CHECK(node.wait_for_log("event=foreign_message_dropped", 5s));
  auto log = node.log();
  CHECK(log.find("peer_address=127.0.0.1:") != std::string::npos);
  CHECK(log.find("event=drain_started") == std::string::npos);
  CHECK(log.find("event=gateway_died") == std::string::npos);
  auto lines = std::count(log.begin(), log.end(), '\n');
  CHECK(lines < 200);  // not one line per frame
}

TEST_CASE(
    "only the node that joined may take its workers back, and joins are bounded "
    "per node",
    "[security][hostile][cluster]") {
  node_process head{{"--pool.workers=1", "--cluster.max-workers-per-node=4",
                     "--cluster.lost-node-expiry=1s", "--heartbeat.interval=200ms",
                     "--heartbeat.timeout=1s"}};
  temp_dir wdir;
  auto wlog = (wdir.path() / "worker.log").string();
  redirections io;
  io.stdout_file = (wdir.path() / "stdout.txt").string();
  io.stderr_file = (wdir.path() / "stderr.txt").string();
  // No node.name: the default must not carry the pid.
  child_process worker{{EMBEDPOOL_NODE_BIN, "--node.role=worker",
                        "--node.join=127.0.0.1:" + std::to_string(head.port()),
                        "--pool.workers=2", "--log.file=" + wlog},
                       io};
  auto cl = connect_client(head.port());
  std::string wname;
  REQUIRE(wait_status(*cl, 15s, [&](const json& st) {
    for (auto& n : st.at("nodes"))
      if (n.at("node") != "local" && n.at("ready") == 2) {
        wname = n.at("node").get<std::string>();
        return true;
      }
    return false;
  }));
  CHECK(wname.find(std::to_string(worker.pid())) == std::string::npos);

  peer_system peer;
  raw_basp_peer raw{*peer.sys};
  raw.connect(head.port());
  auto gw = raw.published_actor();
  auto ask = [&](caf::message msg, uint64_t rid) -> received_message {
    raw.send(gw, msg, 900, rid);
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
      for (auto& r : raw.read_until(std::chrono::steady_clock::now() + 200ms))
        if ((r.message_id & caf::message_id::request_id_mask) == rid)
          return r;
    }
    return {};
  };
  auto is_error = [](const received_message& r, pool::pool_errc code) {
    return r.content.match_elements<caf::error>() &&
           pool::pool_code(r.content.get_as<caf::error>(0)) == code;
  };
  // Dummy actors of the peer's node to offer as workers.
  std::vector<caf::actor> fakes;
  for (int i = 0; i < 5; ++i)
    // A dummy argument: CAF 0.17 spawns an argument-less function through a
    // null std::shared_ptr<std::tuple<>>, which UBSan reports.
    fakes.push_back(peer.sys->spawn(
        [](caf::event_based_actor*, int) -> caf::behavior { return {[](int) {}}; }, 0));

  SECTION("another connection cannot take a node's workers back") {
    auto r = ask(caf::make_message(pool::leave_atom::value, wname), 1);
    CHECK(is_error(r, pool::pool_errc::invalid_input));
    auto st = status_of(*cl);
    CHECK(node_entry(st, wname).at("ready") == 2);
    CHECK(node_entry(st, wname).at("state") == "up");
  }
  SECTION("a join past cluster.max-workers-per-node is refused whole") {
    auto r =
        ask(caf::make_message(pool::join_atom::value, std::string{"evil"}, fakes), 2);
    CHECK(is_error(r, pool::pool_errc::too_large));
    CHECK(node_entry(status_of(*cl), "evil").is_null());
    // Up to the limit is fine; one more is not.
    std::vector<caf::actor> four(fakes.begin(), fakes.begin() + 4);
    auto ok =
        ask(caf::make_message(pool::join_atom::value, std::string{"evil"}, four), 3);
    REQUIRE(ok.content.match_elements<uint32_t>());
    CHECK(ok.content.get_as<uint32_t>(0) == 4);
    std::vector<caf::actor> one{fakes[4]};
    auto more =
        ask(caf::make_message(pool::join_atom::value, std::string{"evil"}, one), 4);
    CHECK(is_error(more, pool::pool_errc::too_large));
    auto slots = status_of(*cl).at("workers").size();
    // The peer goes away: its slots are lost, then freed after the expiry.
    raw.close();
    CHECK(wait_status(*cl, 10s,
                      [](const json& st) { return node_entry(st, "evil").is_null(); }));
    CHECK(head.wait_for_log("event=worker_slot_freed", 5s));
    // A fresh join takes freed slots: the table does not grow.
    raw_basp_peer again{*peer.sys};
    again.connect(head.port());
    again.send(gw, caf::make_message(pool::join_atom::value, std::string{"evil2"}, four),
               900, 5);
    CHECK(wait_status(*cl, 5s, [&](const json& st) {
      return !node_entry(st, "evil2").is_null() && st.at("workers").size() <= slots;
    }));
  }
  SECTION("a name that a live node holds cannot be taken") {
    std::vector<caf::actor> one{fakes[0]};
    auto r = ask(caf::make_message(pool::join_atom::value, wname, one), 6);
    CHECK(is_error(r, pool::pool_errc::invalid_input));
    CHECK(node_entry(status_of(*cl), wname).at("workers") == 2);
  }
  // The real worker node kept its workers throughout.
  CHECK(node_entry(status_of(*cl), wname).at("ready") == 2);
  CHECK(slurp(wlog).find("event=supervisor_lost") == std::string::npos);
  for (auto& f : fakes)
    caf::anon_send_exit(f, caf::exit_reason::kill);
}
