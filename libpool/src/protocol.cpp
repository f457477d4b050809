#include "pool/protocol.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
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

std::string wire_type_name(const std::string& name) {
  return "pool.v" + std::to_string(protocol_version) + "." + name;
}

void add_message_types(caf::actor_system_config& cfg) {
  // Protocol structs carry the protocol version in their names: a peer of
  // another version cannot decode them (CAF drops the message) rather than
  // mis-read them field by field.
  cfg.add_message_type<std::vector<float>>("std::vector<float>");
  cfg.add_message_type<matrix>(wire_type_name("matrix"));
  cfg.add_message_type<embed_answers>(wire_type_name("embed_answers"));
  cfg.add_message_type<job>(wire_type_name("job"));
  cfg.add_message_type<worker_report>(wire_type_name("worker_report"));
  cfg.add_message_type<worker_status>(wire_type_name("worker_status"));
  cfg.add_message_type<std::vector<worker_status>>("std::vector<" +
                                                   wire_type_name("worker_status") + ">");
  cfg.add_message_type<node_status>(wire_type_name("node_status"));
  cfg.add_message_type<std::vector<node_status>>("std::vector<" +
                                                 wire_type_name("node_status") + ">");
  cfg.add_message_type<std::vector<caf::actor>>("std::vector<caf::actor>");
  cfg.add_message_type<ledger_counters>(wire_type_name("ledger"));
  cfg.add_message_type<pool_status>(wire_type_name("status"));
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

caf::error check_peer_protocol(uint32_t peer_protocol) {
  if (peer_protocol == protocol_version)
    return caf::none;
  return make_error(pool_errc::protocol_mismatch,
                    "this node speaks embedpool protocol " +
                        std::to_string(protocol_version) + " (embedpool " +
                        version_string() + "), the peer protocol " +
                        std::to_string(peer_protocol) +
                        "; use a client library of the node's protocol version");
}

caf::expected<std::string> say_hello(caf::actor_system& sys, const caf::actor& gateway,
                                     caf::timespan timeout) {
  caf::scoped_actor self{sys};
  caf::expected<std::string> result{caf::error{}};
  self->request(gateway, timeout, hello_atom::value, protocol_version)
      .receive(
          [&](hello_atom, uint32_t theirs, std::string& version) {
            if (theirs == protocol_version)
              result = std::move(version);
            else
              result = make_error(pool_errc::protocol_mismatch,
                                  "the node speaks embedpool protocol " +
                                      std::to_string(theirs) + " (embedpool " + version +
                                      "), this client protocol " +
                                      std::to_string(protocol_version) + " (embedpool " +
                                      version_string() + ")");
          },
          [&](caf::error& err) {
            // A node from before the handshake answers it like any message it
            // does not understand.
            if (pool_code(err) == pool_errc::invalid_input &&
                error_message(err).rfind("unsupported message", 0) == 0)
              result = make_error(pool_errc::protocol_mismatch,
                                  "the node speaks an unversioned protocol (older than "
                                  "protocol 1: it does not know the hello), this client "
                                  "protocol " +
                                      std::to_string(protocol_version) + " (embedpool " +
                                      version_string() + ")");
            else
              result = std::move(err);
          });
  return result;
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
      {"version", st.version},
      {"protocol", st.protocol},
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
