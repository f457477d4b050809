// The embedpool wire protocol: the types a peer sends to and receives from a
// node's gateway, plus the supervisor <-> worker types that cross the network
// when workers live on other nodes. Include this header and call
// `pool::add_message_types(cfg)` on the `caf::actor_system_config` of every
// process that talks to a node.
//
// Requests (sent to the gateway, answered exactly once with a result or a
// `pool` error, see error.hpp):
//   (embed_atom, std::string text)                      -> matrix (one row)
//   (embed_atom, std::string text, std::string task)    -> matrix (one row)
//   (batch_atom, std::vector<std::string> texts)        -> matrix
//   (batch_atom, std::vector<std::string> texts, task)  -> matrix
//   (embed_atom, text, task, std::string model)         -> matrix (one row)
//   (batch_atom, texts, task, std::string model)        -> matrix
//   (embed_atom, text, task, model, std::string request_id)   -> matrix (one row)
//   (batch_atom, texts, task, model, std::string request_id)  -> matrix
//   (embed_atom, std::vector<std::string> texts, task, model) -> embed_answers
//   (status_atom)                                       -> pool_status
//   (status_atom, std::string model)                    -> pool_status
//   (hello_atom, uint32_t protocol)  -> (hello_atom, uint32_t, std::string version)
// `task` selects a model-specific prefix (e.g. "query" or "passage"); empty
// means none. `model` names one of the models the node serves (listed in
// `pool_status::models`); empty means the default model, an unknown name is
// answered `invalid_input` naming it. The forms without `model` use the
// default model.
// The embed form with a list of texts carries several independent embed
// requests in one message (`pool::client` sends them so under load, see
// `client_options::coalesce`): 1 to `pool.max-batch-items` texts, each
// validated on its own. It is answered with one `embed_answers`, an error per
// text or a row; an error for the whole message (empty or too long list,
// unknown model, `overloaded`, `deadline_exceeded`, a text the model itself
// refused at the worker, ...) applies to every text. The node logs it as one
// request (one request id) and counts each of its texts as one embed
// request: a worker credit, a place in the parked queue, one in the ledger
// and the reply metrics (a list longer than `pool.max-batch-items` counts
// once).
// `request_id` names the request in the node's log lines about it (rejected,
// expired, failed, retried): 1 to 128 bytes of letters, digits and `._:-`
// (anything else is answered `invalid_input`); "" or a shorter form = the node
// makes one. A client that wants to find its request in the node's log sends
// its own.
//
// Handshake: send `(hello_atom, pool::protocol_version)` first (the client
// does, see `say_hello`); a node of another protocol version answers the error
// `protocol_mismatch` naming both versions instead of replies the peer would
// mis-read. The registered type names carry the protocol version
// ("pool.v1.status"), so a peer that skips the hello cannot decode a struct of
// another version: its request fails with `unexpected_response` instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <type_traits>

#include <caf/deserializer.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/fwd.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/serializer.hpp>
#include <caf/timespan.hpp>

#include "pool/atoms.hpp"
#include "pool/error.hpp"
#include "pool/version.hpp"

namespace pool {

/// A row-major matrix of embeddings: row i is the embedding of text i.
/// On the wire: rows, dim, then the values as one block of little-endian
/// IEEE-754 float32 (not element by element: a reply of 16 x 384 floats costs
/// one copy instead of 6,144 serializer calls), then tokens.
struct matrix {
  uint32_t rows = 0;
  uint32_t dim = 0;
  std::vector<float> values;  // rows * dim floats
  /// Tokens the model saw for all rows, counted by the worker that embedded
  /// them (prompt included, after truncation): OpenAI's usage.
  uint64_t tokens = 0;
  /// Microseconds of embedder time spent on these rows (a share of each
  /// micro-batch, by texts): TEI's x-inference-time.
  uint64_t compute_us = 0;
};

namespace detail {
/// Most floats a received matrix may announce (256 MiB); larger is an error.
constexpr uint64_t max_wire_floats = uint64_t{1} << 26;
caf::error save_matrix_values(caf::serializer& sink, std::vector<float>& values);
caf::error load_matrix_values(caf::deserializer& source, const matrix& shape,
                              std::vector<float>& values);
}  // namespace detail

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, matrix& x) {
  if constexpr (std::is_same_v<Inspector, caf::serializer>) {
    return caf::error::eval(
        [&] { return f(caf::meta::type_name("pool.matrix"), x.rows, x.dim); },
        [&] { return detail::save_matrix_values(f, x.values); },
        [&] { return f(x.tokens, x.compute_us); });
  } else if constexpr (std::is_same_v<Inspector, caf::deserializer>) {
    return caf::error::eval(
        [&] { return f(caf::meta::type_name("pool.matrix"), x.rows, x.dim); },
        [&] { return detail::load_matrix_values(f, x, x.values); },
        [&] { return f(x.tokens, x.compute_us); });
  } else {
    return f(caf::meta::type_name("pool.matrix"), x.rows, x.dim, x.values, x.tokens,
             x.compute_us);
  }
}

/// Reply to `(embed_atom, texts, task, model)`: for text i, `errors[i]` if it
/// is set, else the next row of `rows` (rows come in the order of the texts
/// that have one). So `errors.size()` is the number of texts and `rows.rows`
/// the number of unset errors.
struct embed_answers {
  matrix rows;
  std::vector<caf::error> errors;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, embed_answers& x) {
  return f(caf::meta::type_name("pool.embed_answers"), x.rows, x.errors);
}

/// Request lanes; each has its own credits per worker.
enum class lane : uint8_t { embed = 0, batch = 1 };

/// The texts of a request, shared without copying by the supervisor (which
/// keeps them for a retry) and the local worker that computes them; a worker
/// on another node gets a copy over the wire, as a plain list of strings.
/// Immutable once made; copies share it. Thread-safe to read.
class shared_texts {
 public:
  using list = std::vector<std::string>;

  shared_texts() : texts_(std::make_shared<list>()) {}
  explicit shared_texts(list texts) : texts_(std::make_shared<list>(std::move(texts))) {}

  const list& get() const { return *texts_; }
  size_t size() const { return texts_->size(); }
  bool empty() const { return texts_->empty(); }
  const std::string& operator[](size_t i) const { return (*texts_)[i]; }
  list::const_iterator begin() const { return texts_->begin(); }
  list::const_iterator end() const { return texts_->end(); }

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f, shared_texts& x) {
    // Loading fills a list no other holder sees: every default-constructed
    // (or copied-then-loaded) value gets a fresh one first.
    if constexpr (std::is_same_v<Inspector, caf::deserializer>)
      x.texts_ = std::make_shared<list>();
    return f(*x.texts_);
  }

 private:
  std::shared_ptr<list> texts_;  // never null
};

/// One unit of work the supervisor hands to a worker. Owned by value; its
/// texts are shared (see `shared_texts`).
struct job {
  uint64_t id = 0;
  uint8_t lane = 0;  // a `pool::lane`
  shared_texts texts;
  std::string task;
  /// A retry after a worker died or hung: embed it in a call of its own, so
  /// that a poison text cannot take innocent neighbours down with it again.
  bool solo = false;
  /// Time left until the request's deadline when the job was sent, in
  /// nanoseconds (relative, so that clocks of different nodes never meet);
  /// 0 = none. A worker answers `deadline_exceeded` instead of computing a
  /// job whose time ran out while it was queued.
  int64_t time_left_ns = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, job& x) {
  return f(caf::meta::type_name("pool.job"), x.id, x.lane, x.texts, x.task, x.solo,
           x.time_left_ns);
}

/// What a worker reports with every pong.
struct worker_report {
  /// Jobs the worker holds and has not answered yet (its real queue depth).
  uint64_t queue_depth = 0;
  uint64_t completed = 0;  // jobs answered with a result
  uint64_t failed = 0;     // jobs answered with an error
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, worker_report& x) {
  return f(caf::meta::type_name("pool.worker_report"), x.queue_depth, x.completed,
           x.failed);
}

/// The state of a supervisor's worker slot. Local slots: ready -> (died)
/// restarting -> ready | given_up; stuck -> replaced at once; stopped (the
/// supervisor stops); ready and idle for pool.idle-cooldown -> evicted (a
/// scale-up may start a new worker in it). Slots lent by worker nodes: ready
/// -> leaving -> left, or -> lost when the worker or its node dies or goes
/// silent; lost for cluster.lost-node-expiry -> freed (free for any node).
enum class worker_state {
  ready,
  stuck,
  restarting,
  given_up,
  stopped,
  leaving,
  left,
  lost,
  evicted,
  freed
};

/// Every value of `worker_status::state`, in the order of `worker_state`.
inline constexpr const char* worker_states[] = {
    "ready",   "stuck", "restarting", "given_up", "stopped",
    "leaving", "left",  "lost",       "evicted",  "freed"};

static_assert(sizeof(worker_states) / sizeof(worker_states[0]) ==
                  static_cast<size_t>(worker_state::freed) + 1,
              "worker_states names every worker_state in order");

/// The text of a state: its entry in `worker_states`, as `worker_status::state`
/// and the metrics' `state` label give it.
inline const char* to_string(worker_state x) {
  return worker_states[static_cast<size_t>(x)];
}

/// One worker as the supervisor sees it.
struct worker_status {
  uint32_t id = 0;
  std::string node;          // "local" or the remote node's id
  std::string state;         // one of worker_states
  uint64_t queue_depth = 0;  // from the worker's last pong
  uint32_t credits_embed = 0;
  uint32_t credits_batch = 0;
  int64_t last_pong_ms = -1;  // age of the last pong; -1 before the first
  uint64_t completed = 0;
  uint64_t failed = 0;
  uint32_t restarts = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, worker_status& x) {
  return f(caf::meta::type_name("pool.worker_status"), x.id, x.node, x.state,
           x.queue_depth, x.credits_embed, x.credits_batch, x.last_pong_ms, x.completed,
           x.failed, x.restarts);
}

/// One node's workers as the supervisor sees them.
struct node_status {
  std::string node;   // "local" or the worker node's name
  std::string state;  // up | leaving | left | lost
  uint32_t workers = 0;
  uint32_t ready = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_status& x) {
  return f(caf::meta::type_name("pool.node_status"), x.node, x.state, x.workers, x.ready);
}

/// The supervisor's request ledger. Invariant at every instant:
/// accepted == completed + failed + expired + in_flight. Rejected requests were
/// never accepted.
struct ledger_counters {
  uint64_t accepted = 0;
  uint64_t completed = 0;
  uint64_t failed = 0;
  uint64_t rejected = 0;
  uint64_t expired = 0;
  uint64_t in_flight = 0;
};

/// The ledger's invariant: accepted == completed + failed + expired + in_flight.
inline bool balanced(const ledger_counters& l) {
  return l.accepted == l.completed + l.failed + l.expired + l.in_flight;
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ledger_counters& x) {
  return f(caf::meta::type_name("pool.ledger"), x.accepted, x.completed, x.failed,
           x.rejected, x.expired, x.in_flight);
}

/// Reply to `(status_atom)`.
struct pool_status {
  std::string model;
  uint32_t dim = 0;
  std::string policy;  // wait | reject
  bool draining = false;
  std::vector<worker_status> workers;
  std::vector<node_status> nodes;  // workers grouped by node
  ledger_counters ledger;
  uint64_t restarts = 0;   // worker restarts since start
  uint64_t abandoned = 0;  // stuck workers whose threads were abandoned
  uint64_t pending = 0;    // requests parked waiting for credit
  uint64_t pending_capacity = 0;
  uint64_t workers_spawned = 0;      // workers started (first start, restart, scale-up)
  uint64_t workers_evicted = 0;      // idle workers removed by scale-down
  uint64_t workers_given_up = 0;     // slots given up after too many failures
  uint32_t min_workers = 0;          // pool.min-workers
  uint32_t max_workers = 0;          // pool.max-workers
  uint64_t memory_budget_bytes = 0;  // pool.memory-budget; 0 = no budget
  // The memory figures are node-wide (the budget is shared by every model):
  // estimated weights of every model plus buffers of every live local worker.
  uint64_t memory_used_bytes = 0;
  double memory_pressure = 0;       // used / budget; 0 without a budget
  std::vector<std::string> models;  // every model the node serves, default first
  // Set by whoever builds a status (the node): its `version_string()` and
  // `protocol_version`.
  std::string version = version_string();
  uint32_t protocol = protocol_version;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, pool_status& x) {
  return f(caf::meta::type_name("pool.status"), x.model, x.dim, x.policy, x.draining,
           x.workers, x.nodes, x.ledger, x.restarts, x.abandoned, x.pending,
           x.pending_capacity, x.workers_spawned, x.workers_evicted, x.workers_given_up,
           x.min_workers, x.max_workers, x.memory_budget_bytes, x.memory_used_bytes,
           x.memory_pressure, x.models, x.version, x.protocol);
}

/// Registers every non-builtin type of this protocol and the `pool` error
/// category. Call it on the config of every process that talks to a node,
/// before constructing the actor system.
void add_message_types(caf::actor_system_config& cfg);

/// The registered name of a protocol type: "pool.v<protocol_version>.<name>".
std::string wire_type_name(const std::string& name);

/// The node's side of the handshake: none if `peer_protocol` is this build's
/// `protocol_version`, else `protocol_mismatch` naming both versions.
caf::error check_peer_protocol(uint32_t peer_protocol);

/// The peer's side: sends `(hello_atom, protocol_version)` to a node's gateway
/// and waits up to `timeout` for its answer. Returns the node's version string,
/// or `protocol_mismatch` naming both versions (also for a node too old to know
/// the hello), or the error of the request (e.g. `caf::sec::request_timeout`).
caf::expected<std::string> say_hello(caf::actor_system& sys, const caf::actor& gateway,
                                     caf::timespan timeout);

/// Renders a status reply as one JSON object (the `embedpool-cli status` format).
std::string to_json(const pool_status& status);

/// Renders an embedding as `{"dim":N,"embedding":[...]}`.
std::string embedding_to_json(const float* values, size_t dim);

}  // namespace pool
