// A node's status as JSON, for multi-process tests: read it through a client,
// look up a worker node, wait (bounded) for a condition, check the ledger.
#pragma once

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "pool/client.hpp"

namespace pool::test {

/// A client of the node at 127.0.0.1:`port`; throws if it cannot connect.
inline std::unique_ptr<pool::client> connect_client(
    uint16_t port, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  pool::client_options opts;
  opts.port = port;
  opts.timeout = timeout;
  auto cl = pool::client::connect(opts);
  if (!cl)
    throw std::runtime_error("cannot connect: " + pool::describe(cl.error()));
  return std::move(*cl);
}

/// The status of the client's node (`to_json`'s shape); throws on failure.
inline nlohmann::json status_of(pool::client& cl) {
  auto st = cl.status();
  if (!st)
    throw std::runtime_error("status failed: " + pool::describe(st.error()));
  return nlohmann::json::parse(pool::to_json(*st));
}

/// The entry of node `name` in a status's `nodes`, or null.
inline nlohmann::json node_entry(const nlohmann::json& st, const std::string& name) {
  for (auto& n : st.at("nodes"))
    if (n.at("node") == name)
      return n;
  return nlohmann::json{};
}

/// Polls status until `pred` holds (bounded); returns whether it did.
template <class Pred>
bool wait_status(pool::client& cl, std::chrono::milliseconds timeout, Pred pred) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred(status_of(cl)))
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

/// accepted == completed + failed + expired + in_flight
inline bool balanced(const nlohmann::json& st) {
  auto& l = st.at("ledger");
  return l.at("accepted").get<uint64_t>() ==
         l.at("completed").get<uint64_t>() + l.at("failed").get<uint64_t>() +
             l.at("expired").get<uint64_t>() + l.at("in_flight").get<uint64_t>();
}

}  // namespace pool::test
