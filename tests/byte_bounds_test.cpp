// Bounded in bytes, whatever a peer does (fast versions of
// tools/bench/hostile.sh): raw BASP peers on 127.0.0.1 that never read their
// replies, flood the gateway with large unknown messages or status requests,
// or push large batches, against a node with small bounds. Each test checks
// the node's RSS against the bound while the attack runs, and that a
// well-behaved client is served throughout.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include <caf/io/middleman.hpp>

#include "pool/client.hpp"
#include "process_helpers.hpp"
#include "raw_basp_peer.hpp"
#include "status_helpers.hpp"
#include "transport_helpers.hpp"

using namespace std::chrono_literals;
using pool::test::connect_client;
using pool::test::node_process;
using pool::test::peer_system;
using pool::test::raw_basp_peer;
using pool::test::rss_kb;
using steady = std::chrono::steady_clock;

namespace {

/// A bound on RSS growth in KiB. Under AddressSanitizer freed memory waits in
/// its quarantine (256 MiB by default) before reuse, so the bound there is
/// that much looser: it still tells a bounded node from an unbounded one.
constexpr long rss_bound_kb(long kb) {
#if defined(__SANITIZE_ADDRESS__)
  return kb + 512 * 1024;
#else
  return kb;
#endif
}

/// Samples a process's VmRSS every 10 ms on a thread of its own until
/// destroyed; `peak()` is the largest sample.
class rss_sampler {
 public:
  explicit rss_sampler(pid_t pid) : pid_(pid) {
    thread_ = std::thread{[this] {
      while (!stop_) {
        auto now = rss_kb(pid_);
        auto seen = peak_.load();
        while (now > seen && !peak_.compare_exchange_weak(seen, now)) {
        }
        std::this_thread::sleep_for(10ms);
      }
    }};
  }
  ~rss_sampler() {
    stop_ = true;
    thread_.join();
  }
  long peak() const { return peak_.load(); }

 private:
  pid_t pid_;
  std::atomic<bool> stop_{false};
  std::atomic<long> peak_{0};
  std::thread thread_;
};

/// A well-behaved client's calls while an attack runs on another thread: how
/// many it made and how many succeeded within `max_latency` each.
struct probe_result {
  int calls = 0;
  int ok = 0;
};

template <class Attack>
probe_result probe_during(uint16_t port, std::chrono::milliseconds max_latency,
                          Attack attack) {
  auto cl = connect_client(port);
  REQUIRE(cl->embed("before the attack"));
  std::atomic<bool> done{false};
  std::thread attacker{[&] {
    attack();
    done = true;
  }};
  probe_result result;
  while (!done || result.calls < 3) {
    auto start = steady::now();
    auto r = cl->embed("a well-behaved call " + std::to_string(result.calls));
    ++result.calls;
    if (r && steady::now() - start <= max_latency)
      ++result.ok;
    std::this_thread::sleep_for(20ms);
  }
  attacker.join();
  return result;
}

}  // namespace

TEST_CASE(
    "a peer that never reads its replies is refused, then cut off, at "
    "node.max-unread-bytes-per-peer",
    "[security][bytes]") {
  node_process node{{"--pool.workers=1", "--node.max-unread-bytes-per-peer=2"}};
  auto pid = node.process().pid();
  auto rss_start = rss_kb(pid);
  peer_system ps;
  raw_basp_peer reader_that_never_reads{*ps.sys};
  rss_sampler rss{pid};
  uint64_t sent = 0;
  auto probe = probe_during(node.port(), 2s, [&] {
    reader_that_never_reads.connect(node.port());
    auto gateway = reader_that_never_reads.published_actor();
    std::string text(1024, 'r');
    // 40,000 requests would be ~60 MiB of replies; it is cut off long before.
    // 5,000 per second: what one worker serves, so that the well-behaved
    // client's calls are not refused as overload.
    auto start = steady::now();
    auto deadline = start + 60s;
    while (sent < 40000 && steady::now() < deadline && reader_that_never_reads.open()) {
      std::this_thread::sleep_until(start + sent * 200us);
      text[sent % text.size()] = static_cast<char>('a' + sent % 26);
      reader_that_never_reads.send(
          gateway, caf::make_message(pool::embed_atom::value, text), 900, sent + 1);
      ++sent;
    }
  });
  INFO("requests sent before the node closed the connection: " << sent);
  CHECK_FALSE(reader_that_never_reads.open());
  CHECK(sent < 40000);
  REQUIRE(node.wait_for_log("event=peer_unread_bound action=close", 10s));
  auto log = node.log();
  CHECK(log.find("event=peer_unread_bound action=refuse") != std::string::npos);
  CHECK(log.find("peer_address=127.0.0.1:") != std::string::npos);
  // Refused at 2 MiB unread, cut at 3 MiB: far below what it asked for.
  CHECK(rss.peak() - rss_start < rss_bound_kb(48 * 1024));
  CHECK(probe.ok == probe.calls);
}

TEST_CASE(
    "large unknown messages beyond node.max-inbox-bytes are shed before "
    "the gateway works on them",
    "[security][bytes]") {
  node_process node{{"--pool.workers=1", "--node.max-inbox-bytes=4"}};
  auto pid = node.process().pid();
  auto rss_start = rss_kb(pid);
  peer_system ps;
  raw_basp_peer flooder{*ps.sys};
  rss_sampler rss{pid};
  size_t sent = 0;
  auto probe = probe_during(node.port(), 2s, [&] {
    flooder.connect(node.port());
    auto gateway = flooder.published_actor();
    auto blob = caf::make_message(std::string(1000000, 'u'));
    auto deadline = steady::now() + 10s;
    while (sent < 1500 && steady::now() < deadline && flooder.open()) {
      flooder.send(gateway, blob, 900, 0);
      ++sent;
      if (sent % 16 == 0)
        flooder.discard_available();
    }
  });
  INFO("1 MB messages sent: " << sent);
  // Past 64 MiB of dropped messages within 10 s the peer is disconnected.
  CHECK_FALSE(flooder.open());
  CHECK(sent < 1500);
  CHECK(node.wait_for_log("event=peer_disconnected reason=dropped_messages", 5s));
  // The gateway's inbox held at most 4 MiB of it at a time.
  CHECK(rss.peak() - rss_start < rss_bound_kb(64 * 1024));
  CHECK(probe.ok == probe.calls);
  // A new peer is served after the flood (with the node's log if not: what it
  // did with the flooder's connection is the first thing to read).
  std::unique_ptr<pool::client> cl;
  try {
    cl = connect_client(node.port());
  } catch (const std::exception& e) {
    auto log = node.log();
    FAIL(e.what() << "\nnode log (last 6000 bytes):\n"
                  << log.substr(log.size() > 6000 ? log.size() - 6000 : 0));
  }
  auto st = pool::test::status_of(*cl);
  CHECK(pool::test::balanced(st));
}

TEST_CASE(
    "a request that would pass node.max-inbox-bytes is answered overloaded "
    "at once, and the others are served",
    "[security][bytes]") {
  node_process node{{"--pool.workers=1", "--node.max-inbox-bytes=1"}};
  peer_system ps;
  raw_basp_peer peer{*ps.sys};
  peer.connect(node.port());
  auto gateway = peer.published_actor();
  // Every fifth request is a batch of 32 x 60 KB (1.9 MB): more than the
  // whole 1 MiB inbox, so it is shed on arrival. The small embeds between
  // them all fit.
  constexpr uint64_t requests = 250;
  std::vector<std::string> big(32, std::string(60000, 'b'));
  for (uint64_t id = 1; id <= requests; ++id) {
    if (id % 5 == 0)
      peer.send(gateway, caf::make_message(pool::batch_atom::value, big), 900, id);
    else
      peer.send(gateway,
                caf::make_message(pool::embed_atom::value, "small " + std::to_string(id)),
                900, id);
  }
  std::map<uint64_t, int> answers;
  std::set<uint64_t> overloaded;
  auto deadline = steady::now() + 60s;
  while (answers.size() < requests && steady::now() < deadline) {
    for (auto& m : peer.read_messages(requests, steady::now() + 1s)) {
      if (!m.is_response())
        continue;
      auto id = m.message_id & ~uint64_t{0xF000000000000000};
      ++answers[id];
      if (m.content.match_element<caf::error>(0) &&
          m.content.get_as<caf::error>(0).code() ==
              static_cast<uint8_t>(pool::pool_errc::overloaded))
        overloaded.insert(id);
    }
  }
  CHECK(answers.size() == requests);
  CHECK(std::all_of(answers.begin(), answers.end(),
                    [](auto& kv) { return kv.second == 1; }));
  CHECK(overloaded.size() == requests / 5);
  CHECK(std::all_of(overloaded.begin(), overloaded.end(),
                    [](uint64_t id) { return id % 5 == 0; }));
  CHECK(node.wait_for_log("event=inbox_full_shed", 5s));
}

TEST_CASE(
    "a flood of status requests from a peer that never reads costs the node "
    "a bounded amount of memory",
    "[security][bytes]") {
  node_process node{{"--pool.workers=1", "--node.max-unread-bytes-per-peer=1"}};
  auto pid = node.process().pid();
  auto rss_start = rss_kb(pid);
  peer_system ps;
  raw_basp_peer flooder{*ps.sys};
  rss_sampler rss{pid};
  uint64_t sent = 0;
  auto probe = probe_during(node.port(), 2s, [&] {
    flooder.connect(node.port());
    auto gateway = flooder.published_actor();
    auto status = caf::make_message(pool::status_atom::value);
    auto deadline = steady::now() + 30s;
    while (sent < 200000 && steady::now() < deadline && flooder.open()) {
      flooder.send(gateway, status, 900, sent + 1);
      ++sent;
    }
  });
  INFO("status requests sent: " << sent);
  CHECK(rss.peak() - rss_start < rss_bound_kb(64 * 1024));
  CHECK(probe.ok == probe.calls);
}

TEST_CASE(
    "peers pushing large batches hold the node within pool.max-queued-bytes "
    "plus what their connections read",
    "[security][bytes]") {
  // 4 peers keep 4 batches of 64 x 16 KiB (1 MiB each) in flight against a
  // budget of 4 MiB of request text: the rest is answered overloaded.
  node_process node{{"--pool.workers=1", "--pool.max-queued-bytes=4",
                     "--node.max-inbox-bytes=4", "--fault.compute-delay=1ms"}};
  auto pid = node.process().pid();
  peer_system ps;
  // Warm-up: one batch per connection has been read, as in the flood.
  auto cl = connect_client(node.port());
  REQUIRE(cl->embed_batch(std::vector<std::string>(64, std::string(16384, 'w'))));
  auto rss_warm = rss_kb(pid);
  rss_sampler rss{pid};
  std::atomic<uint64_t> ok{0}, overloaded{0}, other{0};
  auto probe = probe_during(node.port(), 2s, [&] {
    std::vector<std::thread> peers;
    for (uint32_t p = 0; p < 4; ++p)
      peers.emplace_back([&, p] {
        auto claimed =
            caf::make_node_id(2000 + p, "0badc0de0badc0de0badc0de0badc0de0badc0de");
        raw_basp_peer peer{*ps.sys, claimed ? *claimed : caf::node_id{}};
        peer.connect(node.port());
        auto gateway = peer.published_actor();
        std::vector<std::string> texts(64, std::string(16384, 'b'));
        uint64_t id = 1;
        auto deadline = steady::now() + 6s;
        while (steady::now() < deadline && peer.open()) {
          for (int i = 0; i < 4; ++i) {
            texts[0][0] = static_cast<char>('a' + id % 26);
            peer.send(gateway, caf::make_message(pool::batch_atom::value, texts), 900,
                      id++);
          }
          size_t answered = 0;
          auto give_up = steady::now() + 30s;
          while (answered < 4 && peer.open() && steady::now() < give_up) {
            for (auto& m : peer.read_messages(4 - answered, steady::now() + 1s)) {
              if (!m.is_response())
                continue;
              ++answered;
              if (!m.content.match_element<caf::error>(0))
                ++ok;
              else if (m.content.get_as<caf::error>(0).code() ==
                       static_cast<uint8_t>(pool::pool_errc::overloaded))
                ++overloaded;
              else
                ++other;
            }
            peer.send_heartbeat();
          }
        }
      });
    for (auto& t : peers)
      t.join();
  });
  INFO("ok " << ok << ", overloaded " << overloaded << ", other " << other);
  CHECK(ok > 0);
  CHECK(overloaded > 0);
  CHECK(other == 0);
  // Budget 4 MiB + inbox 4 MiB + 4 connections x 1 MiB being read, + 32 MiB
  // for replies, copies in flight and the allocator.
  CHECK(rss.peak() - rss_warm < rss_bound_kb((4 + 4 + 4 + 32) * 1024));
  CHECK(probe.ok == probe.calls);
  auto st = pool::test::status_of(*cl);
  CHECK(pool::test::balanced(st));
}
