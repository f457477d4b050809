// Hostile and careless peers for tools/bench/hostile.sh: raw BASP over plain
// TCP to a node on 127.0.0.1 (tests/raw_basp_peer.hpp), one scenario per run.
// Only for nodes you run yourself.
//
//   hostile_peer --port=P slow-reader [--rate=15000] [--count=800000]
//                [--seconds=60] [--text-bytes=1024]
//       embeds at RATE/s, never reads its socket; stops when the node
//       closes the connection (or, with --reconnect=true, connects again),
//       COUNT are sent or SECONDS pass
//   hostile_peer --port=P batches [--peers=8] [--items=256]
//                [--text-bytes=65536] [--seconds=60] [--window=4]
//       PEERS connections each keep WINDOW batches of ITEMS texts in flight
//       and read their answers
//   hostile_peer --port=P unknown [--count=100000] [--bytes=1000000]
//       messages no handler takes (a lone string), as fast as possible
//   hostile_peer --port=P status [--count=200000]
//       status requests as fast as possible, never reading
//
// Prints one JSON object: what was sent, what came back, whether and when the
// node closed the connection.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <nlohmann/json.hpp>

#include "../../tests/raw_basp_peer.hpp"
#include "pool/atoms.hpp"
#include "pool/error.hpp"
#include "pool/protocol.hpp"

namespace {

using steady = std::chrono::steady_clock;
using pool::test::peer_system;
using pool::test::raw_basp_peer;
using namespace std::chrono_literals;

struct options {
  std::string scenario;
  uint16_t port = 0;
  double rate = 15000;
  uint64_t count = 0;
  double seconds = 60;
  size_t text_bytes = 0;
  size_t peers = 8;
  size_t items = 256;
  size_t window = 4;
  size_t bytes = 1000000;
  bool reconnect = false;
};

bool parse(int argc, char** argv, options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      o.scenario = arg;
      continue;
    }
    auto eq = arg.find('=');
    if (eq == std::string::npos)
      return false;
    auto key = arg.substr(2, eq - 2);
    auto value = arg.substr(eq + 1);
    if (key == "port")
      o.port = static_cast<uint16_t>(std::stoul(value));
    else if (key == "rate")
      o.rate = std::stod(value);
    else if (key == "count")
      o.count = std::stoull(value);
    else if (key == "seconds")
      o.seconds = std::stod(value);
    else if (key == "text-bytes")
      o.text_bytes = std::stoull(value);
    else if (key == "peers")
      o.peers = std::stoull(value);
    else if (key == "items")
      o.items = std::stoull(value);
    else if (key == "window")
      o.window = std::stoull(value);
    else if (key == "bytes")
      o.bytes = std::stoull(value);
    else if (key == "reconnect")
      o.reconnect = value == "true";
    else
      return false;
  }
  return o.port != 0 && !o.scenario.empty();
}

/// A node id of its own for peer `i` (several peers share one process).
caf::node_id claimed_node(size_t i) {
  auto id = caf::make_node_id(static_cast<uint32_t>(1000 + i),
                              "0badc0de0badc0de0badc0de0badc0de0badc0de");
  return id ? *id : caf::node_id{};
}

double since(steady::time_point start) {
  return std::chrono::duration<double>(steady::now() - start).count();
}

/// The error code of a reply, "ok" for a result, "other" if unreadable.
std::string reply_kind(const pool::test::received_message& m) {
  if (m.content.match_element<caf::error>(0)) {
    const auto& err = m.content.get_as<caf::error>(0);
    if (err.category() == caf::atom("pool"))
      return pool::to_string(static_cast<pool::pool_errc>(err.code()));
    return "caf_error";
  }
  return m.content.empty() ? "other" : "ok";
}

nlohmann::json slow_reader(caf::actor_system& sys, const options& o) {
  std::string text(o.text_bytes ? o.text_bytes : 1024, 'a');
  auto count = o.count ? o.count : 800000;
  auto start = steady::now();
  uint64_t sent = 0;
  uint64_t connections = 0;
  std::vector<double> closed_at;
  // With --reconnect=true it connects again each time the node closes the
  // connection, until COUNT are sent or SECONDS pass.
  while (sent < count && since(start) < o.seconds && (connections == 0 || o.reconnect)) {
    raw_basp_peer peer{sys};
    peer.connect(o.port);
    ++connections;
    auto gateway = peer.published_actor();
    while (sent < count && since(start) < o.seconds) {
      auto due = start + std::chrono::duration_cast<steady::duration>(
                             std::chrono::duration<double>(sent / o.rate));
      std::this_thread::sleep_until(due);
      text[sent % text.size()] = static_cast<char>('a' + sent % 26);
      peer.send(gateway, caf::make_message(pool::embed_atom::value, text), 900, sent + 1);
      if (!peer.open()) {
        closed_at.push_back(since(start));
        break;
      }
      ++sent;
    }
  }
  return {{"scenario", "slow-reader"},
          {"sent", sent},
          {"seconds", since(start)},
          {"connections", connections},
          {"closed_by_node_at_s", closed_at}};
}

nlohmann::json batches(caf::actor_system& sys, const options& o) {
  std::vector<std::thread> threads;
  std::mutex mtx;
  std::map<std::string, uint64_t> replies;
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> closed{0};
  auto start = steady::now();
  for (size_t p = 0; p < o.peers; ++p)
    threads.emplace_back([&, p] {
      raw_basp_peer peer{sys, claimed_node(p)};
      try {
        peer.connect(o.port);
      } catch (const std::exception&) {
        ++closed;
        return;
      }
      auto gateway = peer.published_actor();
      std::vector<std::string> texts(
          o.items, std::string(o.text_bytes ? o.text_bytes : 65536, 'b'));
      uint64_t id = 1;
      std::map<std::string, uint64_t> mine;
      while (since(start) < o.seconds && peer.open()) {
        for (size_t i = 0; i < o.window; ++i) {
          texts[0][0] = static_cast<char>('a' + id % 26);
          peer.send(gateway, caf::make_message(pool::batch_atom::value, texts), 900,
                    id++);
          ++sent;
        }
        // Waits for the window's answers, with a heartbeat each second as a
        // CAF peer sends them (the node closes silent connections).
        size_t answered = 0;
        auto give_up = steady::now() + 60s;
        while (answered < o.window && peer.open() && steady::now() < give_up) {
          for (auto& m : peer.read_messages(o.window - answered, steady::now() + 1s))
            if (m.is_response()) {
              ++answered;
              ++mine[reply_kind(m)];
            }
          peer.send_heartbeat();
        }
      }
      if (!peer.open())
        ++closed;
      std::lock_guard<std::mutex> guard{mtx};
      for (auto& [k, v] : mine)
        replies[k] += v;
    });
  for (auto& t : threads)
    t.join();
  return {{"scenario", "batches"},
          {"sent", sent.load()},
          {"replies", replies},
          {"seconds", since(start)},
          {"closed_by_node", closed.load()}};
}

nlohmann::json unknown(caf::actor_system& sys, const options& o) {
  raw_basp_peer peer{sys};
  peer.connect(o.port);
  auto gateway = peer.published_actor();
  auto count = o.count ? o.count : 100000;
  std::string blob(o.bytes, 'u');
  auto msg = caf::make_message(blob);
  auto start = steady::now();
  uint64_t sent = 0;
  while (sent < count && since(start) < o.seconds && peer.open()) {
    peer.send(gateway, msg, 900, 0);
    if (peer.open())
      ++sent;
    if (sent % 64 == 0)
      peer.discard_available();
  }
  return {{"scenario", "unknown"},
          {"sent", sent},
          {"bytes_each", o.bytes},
          {"seconds", since(start)},
          {"closed_by_node", !peer.open()}};
}

nlohmann::json status_flood(caf::actor_system& sys, const options& o) {
  raw_basp_peer peer{sys};
  peer.connect(o.port);
  auto gateway = peer.published_actor();
  auto count = o.count ? o.count : 200000;
  auto msg = caf::make_message(pool::status_atom::value);
  auto start = steady::now();
  uint64_t sent = 0;
  while (sent < count && since(start) < o.seconds && peer.open()) {
    peer.send(gateway, msg, 900, sent + 1);
    if (peer.open())
      ++sent;
  }
  auto sending = since(start);
  return {{"scenario", "status"},
          {"sent", sent},
          {"sending_s", sending},
          {"closed_by_node", !peer.open()}};
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  if (!parse(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: hostile_peer --port=P slow-reader|batches|unknown|status "
                 "[--rate=R] [--count=N] [--seconds=S] [--text-bytes=N] [--peers=N] "
                 "[--items=N] [--window=N] [--bytes=N] [--reconnect=true]\n");
    return 2;
  }
  peer_system ps;
  nlohmann::json out;
  try {
    if (o.scenario == "slow-reader")
      out = slow_reader(*ps.sys, o);
    else if (o.scenario == "batches")
      out = batches(*ps.sys, o);
    else if (o.scenario == "unknown")
      out = unknown(*ps.sys, o);
    else if (o.scenario == "status")
      out = status_flood(*ps.sys, o);
    else {
      std::fprintf(stderr, "hostile_peer: unknown scenario %s\n", o.scenario.c_str());
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hostile_peer: %s\n", e.what());
    return 1;
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
