#include "status.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace pool::detail {

namespace {

worker_status worker_of(const core::slot& s, core::time_point now) {
  worker_status w;
  w.id = s.id;
  w.node = s.node;
  w.state = to_string(s.state);
  w.queue_depth = s.report.queue_depth;
  w.credits_embed = s.credits[0];
  w.credits_batch = s.credits[1];
  w.last_pong_ms = s.ever_ponged ? core::to_ms(now - s.last_pong) : -1;
  w.completed = s.completed;
  w.failed = s.failed;
  w.restarts = s.restarts;
  return w;
}

/// Workers grouped by node: up if some worker serves; leaving; otherwise the
/// state all its workers share.
std::vector<node_status> nodes_of(const core::slot_table& slots) {
  std::vector<node_status> nodes;
  for (auto& s : slots.all()) {
    auto i = std::find_if(nodes.begin(), nodes.end(),
                          [&](const node_status& n) { return n.node == s.node; });
    if (i == nodes.end()) {
      nodes.push_back(node_status{s.node, {}, 0, 0});
      i = nodes.end() - 1;
    }
    ++i->workers;
    if (s.state == core::worker_state::ready)
      ++i->ready;
    if (s.state == core::worker_state::ready)
      i->state = "up";
    else if (s.state == core::worker_state::leaving && i->state != "up")
      i->state = "leaving";
    else if (i->state.empty())
      i->state = s.node == "local" ? "up" : to_string(s.state);
  }
  return nodes;
}

}  // namespace

pool_status make_status(const status_source& src, core::time_point now) {
  pool_status result;
  result.model = src.model;
  result.dim = src.dim;
  result.policy = src.pool.policy == overload_policy::wait ? "wait" : "reject";
  result.draining = src.draining;
  for (auto& s : src.slots.all())
    result.workers.push_back(worker_of(s, now));
  result.nodes = nodes_of(src.slots);
  result.ledger = src.ledger.counters();
  result.ledger.rejected += src.gate_shed;
  result.restarts = src.slots.restarts_total();
  result.abandoned = src.slots.abandoned();
  result.pending = src.ledger.pending();
  result.pending_capacity = src.pool.pending_capacity;
  result.workers_spawned = src.slots.spawned();
  result.workers_evicted = src.slots.evicted();
  result.workers_given_up = src.slots.given_up();
  result.min_workers = src.limits.min;
  result.max_workers = src.limits.max;
  auto& budget = src.slots.budget();
  result.memory_budget_bytes = budget.limit();
  result.memory_used_bytes = budget.used();
  result.memory_pressure = budget.pressure();
  result.models = src.models;
  return result;
}

log_event stats_event(const pool_status& status) {
  std::string text = "[";
  auto json = nlohmann::ordered_json::array();
  for (const auto& w : status.workers) {
    if (text.size() > 1)
      text += ',';
    text += std::to_string(w.id) + ":" + w.state +
            ":depth=" + std::to_string(w.queue_depth) +
            ":embed=" + std::to_string(w.credits_embed) +
            ":batch=" + std::to_string(w.credits_batch);
    json.push_back({{"id", w.id},
                    {"state", w.state},
                    {"queue_depth", w.queue_depth},
                    {"credits_embed", w.credits_embed},
                    {"credits_batch", w.credits_batch}});
  }
  text += ']';
  auto& l = status.ledger;
  log_event ev{"stats"};
  ev.add("accepted", l.accepted)
      .add("completed", l.completed)
      .add("failed", l.failed)
      .add("rejected", l.rejected)
      .add("expired", l.expired)
      .add("in_flight", l.in_flight)
      .add("pending", status.pending)
      .add("restarts", status.restarts)
      .add_raw("workers", text, json.dump());
  return ev;
}

}  // namespace pool::detail
