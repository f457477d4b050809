#include "pool/protocol.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system_config.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>

namespace pool {

namespace detail {

namespace {

constexpr bool little_endian_host() {
  return __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
}

void swap_bytes(std::vector<float>& values) {
  for (auto& v : values) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    bits = __builtin_bswap32(bits);
    std::memcpy(&v, &bits, sizeof bits);
  }
}

}  // namespace

caf::error save_matrix_values(caf::serializer& sink, std::vector<float>& values) {
  auto count = values.size();
  if (auto err = sink.begin_sequence(count))
    return err;
  if (count > 0) {
    if constexpr (little_endian_host()) {
      if (auto err = sink.apply_raw(count * sizeof(float), values.data()))
        return err;
    } else {
      auto copy = values;
      swap_bytes(copy);
      if (auto err = sink.apply_raw(count * sizeof(float), copy.data()))
        return err;
    }
  }
  return sink.end_sequence();
}

caf::error load_matrix_values(caf::deserializer& source, const matrix& shape,
                              std::vector<float>& values) {
  size_t count = 0;
  if (auto err = source.begin_sequence(count))
    return err;
  if (count != uint64_t{shape.rows} * shape.dim || count > max_wire_floats)
    return make_error(pool_errc::invalid_input,
                      "malformed matrix: " + std::to_string(count) + " values for " +
                          std::to_string(shape.rows) + " x " + std::to_string(shape.dim));
  values.resize(count);
  if (count > 0) {
    if (auto err = source.apply_raw(count * sizeof(float), values.data()))
      return err;
    if constexpr (!little_endian_host())
      swap_bytes(values);
  }
  return source.end_sequence();
}

}  // namespace detail

void add_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<std::vector<float>>("std::vector<float>");
  cfg.add_message_type<matrix>("pool.matrix");
  cfg.add_message_type<job>("pool.job");
  cfg.add_message_type<worker_report>("pool.worker_report");
  cfg.add_message_type<worker_status>("pool.worker_status");
  cfg.add_message_type<std::vector<worker_status>>("std::vector<pool.worker_status>");
  cfg.add_message_type<node_status>("pool.node_status");
  cfg.add_message_type<std::vector<node_status>>("std::vector<pool.node_status>");
  cfg.add_message_type<std::vector<caf::actor>>("std::vector<caf::actor>");
  cfg.add_message_type<ledger_counters>("pool.ledger");
  cfg.add_message_type<pool_status>("pool.status");
  cfg.add_error_category(
      pool_category,
      [](uint8_t code, caf::atom_value, const caf::message& ctx) -> std::string {
        std::string result = "pool.";
        result += to_string(static_cast<pool_errc>(code));
        if (ctx.size() >= 1 && ctx.match_element<std::string>(0)) {
          result += ": ";
          result += ctx.get_as<std::string>(0);
        }
        return result;
      });
}

std::string to_json(const pool_status& st) {
  nlohmann::json workers = nlohmann::json::array();
  for (const auto& w : st.workers) {
    workers.push_back({
        {"id", w.id},
        {"node", w.node},
        {"state", w.state},
        {"queue_depth", w.queue_depth},
        {"credits", {{"embed", w.credits_embed}, {"batch", w.credits_batch}}},
        {"last_pong_ms", w.last_pong_ms},
        {"completed", w.completed},
        {"failed", w.failed},
        {"restarts", w.restarts},
    });
  }
  nlohmann::json nodes = nlohmann::json::array();
  for (const auto& n : st.nodes) {
    nlohmann::json ids = nlohmann::json::array();
    for (const auto& w : st.workers)
      if (w.node == n.node)
        ids.push_back(w.id);
    nodes.push_back({{"node", n.node},
                     {"state", n.state},
                     {"workers", n.workers},
                     {"ready", n.ready},
                     {"worker_ids", std::move(ids)}});
  }
  nlohmann::json ledger = {
      {"accepted", st.ledger.accepted}, {"completed", st.ledger.completed},
      {"failed", st.ledger.failed},     {"rejected", st.ledger.rejected},
      {"expired", st.ledger.expired},   {"in_flight", st.ledger.in_flight},
  };
  nlohmann::json result = {
      {"model", st.model},
      {"dim", st.dim},
      {"policy", st.policy},
      {"draining", st.draining},
      {"workers", std::move(workers)},
      {"nodes", std::move(nodes)},
      {"ledger", std::move(ledger)},
      {"restarts", st.restarts},
      {"abandoned", st.abandoned},
      {"pending", st.pending},
      {"pending_capacity", st.pending_capacity},
      {"workers_spawned", st.workers_spawned},
      {"workers_evicted", st.workers_evicted},
      {"workers_given_up", st.workers_given_up},
      {"min_workers", st.min_workers},
      {"max_workers", st.max_workers},
      {"memory",
       {{"budget_bytes", st.memory_budget_bytes},
        {"used_bytes", st.memory_used_bytes},
        {"pressure", st.memory_pressure}}},
      {"models", st.models},
  };
  return result.dump();
}

std::string embedding_to_json(const float* values, size_t dim) {
  std::string out;
  out.reserve(32 + dim * 12);
  out += "{\"dim\":";
  out += std::to_string(dim);
  out += ",\"embedding\":[";
  char buf[32];
  for (size_t i = 0; i < dim; ++i) {
    if (i > 0)
      out += ',';
    float v = std::isfinite(values[i]) ? values[i] : 0.0f;
    int n = std::snprintf(buf, sizeof(buf), "%.9g", static_cast<double>(v));
    out.append(buf, static_cast<size_t>(n));
  }
  out += "]}";
  return out;
}

}  // namespace pool
