// The actors of a node and their message interfaces (internal to libpool).
//
//  root ── spawns, monitors, publishes, drains ──▶ gateway, supervisor × models
//
//  peer ◀─▶ gateway ──(submit)──▶ supervisor ──(work, credits)──▶ worker × N
//             ▲  └─◀─(answer)──────┘ ▲   └──(ping, high priority)──▶ │
//             │                      └──────(done | fail, pong)──────┘
//             └─▶ lent workers of worker nodes (work and pings sent *as* the
//                 gateway; their done/fail/pong come back through it)
//
// Trust boundary: the gateway is the only actor that ever sends to another
// node, so it is the only one in CAF's registry and the only one a peer can
// address. It answers peers itself, drops exit, error, down and response
// frames no local owner sent (guarded_actor.hpp), and every internal actor
// drops what comes from another node (peer_guard.hpp). A worker node's
// lender and lent workers are addressable from the node they joined and
// guard themselves the same way.
//
// gateway (published; the only actor peers reach)
//   (embed_atom, text [, task [, model [, request_id]]])  -> matrix (one row)
//   (batch_atom, texts [, task [, model [, request_id]]]) -> matrix
//   (embed_atom, texts, task, model)                       -> embed_answers
//                                 validated, then passed to the model's
//                                 supervisor; request_id "" = the gateway makes one;
//                                 a list of embeds is validated text by text and
//                                 its valid texts go on as one embed-lane request
//   (embed|batch_atom, ..., request_id, client_address)   the same from the
//                                 node's HTTP front (local senders only)
//   (status_atom [, model])       -> pool_status          forwarded to the model's
//                                                         supervisor
//   model "" = the default model; an unknown one -> invalid_input naming it
//   (metrics_atom)                -> std::string          Prometheus exposition
//                                                         (statuses + registry)
//   (join_atom, name, workers)    -> uint32_t             asked of the default
//   (leave_atom, name)            -> uint32_t             supervisor, with the
//                                                         sender's node id
//   (answer_atom, ticket, matrix | error)   from a supervisor: answers a peer
//   (done|fail|pong ...) from a worker node: passed on to the default supervisor
//   anything else                 -> pool error invalid_input (one log line a
//                                    second at most, with the peer)
// root, supervisor: typed interfaces, `root_interface` and
//   `supervisor_interface` below; a sender holding their handle is checked
//   at compile time.
// The gateway, workers and the lender stay dynamically typed: peers reach
// them, so each takes any message and answers what it does not know with a
// pool error itself; and CAF 0.17 lets a typed actor send() only to typed
// actors, while these answer peers and proxies, which are not.
// worker
//   (work_atom, job)        -> later (done_atom, job.id, matrix) or
//                              (fail_atom, job.id, error) to the sender
//   (ping_atom, seq)        -> (pong_atom, seq, worker_report) to the sender
//   (run_atom)              internal: embeds the next chunk of queued work
// lender (worker nodes; local senders only)
//   (drain_atom)            -> leave: takes the lent workers back and quits
//   (reconnect_atom)        internal: the next connect attempt after a backoff
//   It sends (hello_atom, protocol), then (join_atom, name, workers) and at
//   the end (leave_atom, name) to the supervisor's gateway.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/behavior.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_actor.hpp>

#include "memory_budget.hpp"
#include "pool/config.hpp"
#include "pool/embedder.hpp"
#include "pool/protocol.hpp"
#include "request_origin.hpp"

namespace pool::detail {

class metrics_registry;
struct model_metrics;

// -- worker ------------------------------------------------------------------

struct worker_config {
  /// Shared by all workers of a model; must outlive nothing (shared ownership).
  std::shared_ptr<const embedder> model;
  /// Texts embedded per BLAS call at most (pool.micro-batch-texts).
  uint32_t micro_batch_texts = 64;
  /// Longest a chunk is estimated to take (heartbeat.interval / 4 in a
  /// node): pings are answered between chunks, so a busy worker still answers
  /// within heartbeat.interval. Zero = chunks are cut by text count only.
  caf::timespan chunk_time_budget{0};
  fault_section fault;
  uint32_t slot = 0;  // for log lines only
  /// Where compute time and micro-batch sizes are recorded; null = nowhere.
  std::shared_ptr<model_metrics> metrics;
  /// The only actor whose exit message the worker obeys (its supervisor,
  /// which it also monitors: it quits with it); null = none (a lent worker,
  /// stopped through `retired`).
  caf::actor_addr owner;
  /// Who may send work and pings; empty = anyone (deterministic tests).
  std::function<bool(const caf::strong_actor_ptr& sender)> accepts;
  /// Set by a lent worker's lender when the worker is to quit: it does at
  /// the next message it handles. Null = never.
  std::shared_ptr<std::atomic<bool>> retired;
  /// Most jobs held at once (its credits: pool.embed-queue-capacity plus
  /// pool.batch-queue-capacity); past it a job is answered `overloaded` at
  /// once, so no sender can queue more than the credits it was given.
  uint32_t max_jobs = 150;
  /// A chunk estimated to take at most this long is embedded on the
  /// scheduler thread that runs the worker (pool.inline-compute): no thread
  /// hand-off for a short request. Longer chunks, the first one (nothing
  /// measured yet) and the hang drill go to the worker's compute thread.
  caf::timespan inline_compute{0};
  /// Whether the worker has a compute thread at all (set by spawn_worker);
  /// without one every chunk runs inline.
  bool compute_thread = false;
};

/// Spawns a worker on the scheduler; `own_thread` gives it a compute thread
/// (a detached actor, spawned with its first long chunk) for chunks longer
/// than `cfg.inline_compute` (production); false embeds everything inline
/// (deterministic tests). With an owner or a retired
/// flag it refuses, before queueing, exit messages not from its owner and
/// control frames from other nodes (guarded_actor.hpp); with neither it is a
/// plain actor (tests).
caf::actor spawn_worker(caf::actor_system& sys, worker_config cfg, bool own_thread);

/// Releases every worker hung by the `fault.hang-marker` drill (called when a
/// node shuts down so that abandoned threads can end).
void release_hung_workers();

// -- supervisor --------------------------------------------------------------

struct admission_gate;

/// A request the gateway passes to a model's supervisor. Local only: it has
/// no type name, so no peer can send one.
struct submission {
  uint64_t ticket = 0;  // the gateway's; the answer names it
  lane ln = lane::embed;
  std::vector<std::string> texts;
  std::string task;
  /// Bytes taken from the node's byte_budget for it (0 = none): the
  /// supervisor gives them back once the request is done.
  uint64_t charged = 0;
  /// Its id and sender, named by every log line about it.
  request_origin origin;
};

/// A model's supervisor. Local senders only: peers reach it through the
/// gateway, and a message from another node is dropped (peer_guard.hpp).
using supervisor_interface = caf::typed_actor<
    // a request from the gateway; (answer_atom, ticket, matrix | error) to the
    // sender later, by the request's deadline
    caf::reacts_to<submit_atom, submission>,
    // the model's status
    caf::replies_to<status_atom>::with<pool_status>,
    // from the root: the gateway through which lent workers are reached
    caf::reacts_to<gateway_atom, caf::actor>,
    // a worker node lends workers (through the gateway): how many were added,
    // all or none
    caf::replies_to<join_atom, caf::node_id, std::string,
                    std::vector<caf::actor>>::with<uint32_t>,
    // a worker node takes them back: answered once they hold no work
    caf::replies_to<leave_atom, caf::node_id, std::string>::with<uint32_t>,
    // a worker's result for a job
    caf::reacts_to<done_atom, uint64_t, matrix>,
    // a worker's error for a job
    caf::reacts_to<fail_atom, uint64_t, caf::error>,
    // a worker's answer to a ping: its real queue depth
    caf::reacts_to<pong_atom, uint64_t, worker_report>,
    // its own timer: restart the worker of a slot (slot, generation)
    caf::reacts_to<restart_atom, uint32_t, uint32_t>,
    // its own timer: heartbeats, scaling, the stats line, the drain's deadline
    caf::reacts_to<tick_atom>,
    // from the root once drain_signal is set: drain, then quit
    caf::reacts_to<drain_atom>>;

/// Creates a worker for a slot. The supervisor monitors what it returns.
using worker_factory = std::function<caf::actor(caf::local_actor* self, uint32_t slot)>;

struct supervisor_config {
  pool_section pool;
  heartbeat_section heartbeat;
  cluster_section cluster;
  log_section log;
  /// Set by the node's signal handling: `(drain_atom)` is obeyed only then.
  /// Null = always (tests).
  std::shared_ptr<const std::atomic<bool>> drain_signal;
  /// What requests call this model (its status, log lines and metrics say so).
  std::string model_name;
  uint32_t dim = 0;
  /// The tasks the model knows (embedder::tasks); others are invalid_input.
  std::vector<std::string> tasks;
  worker_factory make_worker;
  /// Estimated bytes of the model that its workers share (weights): reserved
  /// against `budget`, unconditionally, while the supervisor runs.
  uint64_t weights_bytes = 0;
  /// Estimated bytes of one local worker (embedder::worker_bytes). A slot
  /// holds this reservation from its spawn until the worker is evicted or
  /// given up; restarts and stuck replacements reuse it. The first
  /// `pool.min-workers` are reserved unconditionally (the node checks them
  /// against the budget before it starts); any other spawn that would pass
  /// the budget is refused and logged. Lent (remote) workers reserve nothing.
  uint64_t worker_bytes = 0;
  /// Shared by the supervisors of every model of the node; null = a budget of
  /// this supervisor's own without a limit.
  std::shared_ptr<memory_budget> budget;
  /// Every model the node serves, default first (pool_status::models); empty
  /// = this model alone.
  std::vector<std::string> model_names;
  /// The bound of submissions queued for this supervisor; null = its own.
  std::shared_ptr<admission_gate> gate;
  /// The node's bound on request bytes (pool.max-queued-bytes), shared by
  /// every model and the gateway; null = one of its own from `pool`.
  std::shared_ptr<byte_budget> bytes;
  /// The node's metrics; the supervisor records into `metrics->model(model_name)`.
  /// Null = a registry of its own.
  std::shared_ptr<metrics_registry> metrics;
};

/// Spawns the supervisor of one model. It serves lent workers through the
/// gateway its root sends it with `(gateway_atom, caf::actor)`.
supervisor_interface spawn_supervisor(caf::actor_system& sys, supervisor_config cfg);

// -- root ----------------------------------------------------------------------

/// The node root: every served model's supervisor, one gateway routing to
/// them, published on host:port.
struct root_config {
  /// One per served model, default first (at least one). The root gives each
  /// its admission gate, the node's `bytes`, `metrics`, `drain_signal` and the
  /// list of model names.
  std::vector<supervisor_config> models;
  /// status.max-age: the gateway answers status and metrics from a snapshot
  /// at most this old.
  caf::timespan status_max_age = std::chrono::milliseconds(100);
  /// The node's bound on request bytes (pool.max-queued-bytes), shared by
  /// every model and the gateway; null = one from the default model's `pool`.
  std::shared_ptr<byte_budget> bytes;
  /// The node's metrics, rendered by the gateway. Null = a registry of its own.
  std::shared_ptr<metrics_registry> metrics;
  /// Set by the node's signal handling: `(drain_atom)` is obeyed only then.
  /// Null = always (tests).
  std::shared_ptr<const std::atomic<bool>> drain_signal;
  /// Publish the gateway on host:port through the middleman (false in
  /// deterministic tests, which talk to the gateway directly).
  bool publish = true;
  std::string host = "127.0.0.1";
  uint16_t port = 4242;
  /// Publish through CAF's openssl manager (mutual TLS) instead of plain BASP.
  bool tls = false;
  /// Called once with the bound port after the first successful publish.
  std::function<void(uint16_t)> on_listening;
};

/// The node root. Local senders only.
using root_interface = caf::typed_actor<
    // the current gateway (a replacement after one died)
    caf::replies_to<gateway_atom>::with<caf::actor>,
    // every model's supervisor, default first; null once one is down
    caf::replies_to<models_atom>::with<std::vector<supervisor_interface>>,
    // its own timer: publish the replacement gateway again (port, attempt)
    caf::reacts_to<republish_atom, uint16_t, int>,
    // from the node's signal handling, once drain_signal is set: the drain
    caf::reacts_to<drain_atom>,
    // its own timer: the drain's bound
    caf::reacts_to<tick_atom>>;

/// Spawns the node root: a supervisor per model (monitored: one that dies
/// outside a drain stops the root with its reason), the gateway (replaced
/// and republished on the same port if it dies), and on `(drain_atom)` the
/// drain in a fixed order: every supervisor drains and quits, then the
/// gateway that carried their last answers, then the root. Answers
/// `(gateway_atom)` -> the current gateway and `(models_atom)` -> the
/// supervisors, default first.
root_interface spawn_root(caf::actor_system& sys, root_config cfg);

// -- lender (worker nodes) ------------------------------------------------------

/// A worker node's agent: spawns the node's workers, lends them to a remote
/// supervisor (join through its gateway), replaces local workers that die,
/// reconnects with backoff when the supervisor is lost (trying each listed
/// supervisor in turn), and on `(drain_atom)` takes its workers back (leave,
/// waiting until they hold no work) and quits.
struct lender_config {
  std::vector<std::pair<std::string, uint16_t>> supervisors;  // at least one
  std::string node_name;
  uint32_t workers = 1;
  worker_config worker;
  /// Lent workers get a compute thread each (spawn_worker's `own_thread`).
  bool worker_compute_threads = true;
  bool tls = false;  // connect through the openssl manager
  caf::timespan retry_min = std::chrono::milliseconds(100);
  caf::timespan retry_max = std::chrono::seconds(5);
  caf::timespan leave_timeout = std::chrono::seconds(30);
  /// Set by the node's signal handling: `(drain_atom)` is obeyed only then.
  /// Null = always (tests).
  std::shared_ptr<const std::atomic<bool>> drain_signal;
};

caf::actor spawn_lender(caf::actor_system& sys, lender_config cfg);

/// Bounds the submissions on their way from a gateway to its supervisor, i.e.
/// the supervisor's mailbox: the gateway counts one up per submission it
/// forwards and sheds (answers `overloaded`) when `limit` are queued; the
/// supervisor counts one down per submission it takes. Shared by one gateway
/// and one supervisor; thread-safe.
struct admission_gate {
  explicit admission_gate(uint32_t max_queued) : limit(max_queued) {}
  const uint32_t limit;
  std::atomic<uint32_t> queued{0};
  std::atomic<uint64_t> shed{0};  // answered `overloaded` by the gateway

  /// The gate's limit for a pool: the pending queue's capacity, at least 1024.
  static uint32_t limit_for(const pool_section& pool) {
    return std::max<uint32_t>(1024, pool.pending_capacity);
  }
};

/// One model a gateway routes to.
struct model_route {
  std::string name;
  supervisor_interface supervisor;
  std::shared_ptr<admission_gate> gate;
  /// The node's request bytes (shared by every route); null = no bound.
  std::shared_ptr<byte_budget> bytes;
};

/// Spawns a gateway that validates requests against `limits` and submits them
/// to the supervisor of the model they name (`routes`, default first),
/// counting its own replies in `registry->model(route name)` and rendering
/// `registry` for `(metrics_atom)` (null = a registry of its own). Only
/// `parent` may stop it; a model whose supervisor is down is answered
/// `unavailable`, and it quits once every supervisor is down.
caf::actor spawn_gateway(caf::local_actor* parent, std::vector<model_route> routes,
                         const pool_section& limits,
                         std::shared_ptr<metrics_registry> registry = nullptr,
                         caf::timespan status_max_age = std::chrono::milliseconds(100));

/// Spawns a gateway that validates requests against `limits` and submits them
/// to `supervisor` through `gate`, counting its own replies in
/// `registry->model(model_name)` and rendering `registry` for `(metrics_atom)`
/// (null = a registry of its own).
caf::actor spawn_gateway(caf::local_actor* parent, supervisor_interface supervisor,
                         const pool_section& limits, std::shared_ptr<admission_gate> gate,
                         std::shared_ptr<metrics_registry> registry = nullptr,
                         const std::string& model_name = "");

/// Validates one text for the gateway: an error for empty text, text over
/// `max_text_bytes` (too_large) or invalid UTF-8; none otherwise. `what` names
/// the text in messages ("text" or "texts[3]").
caf::error validate_text(const std::string& text, uint32_t max_text_bytes,
                         const std::string& what);

/// True if `text` is well-formed UTF-8 (no overlongs, surrogates or values
/// above U+10FFFF).
bool is_valid_utf8(std::string_view text);

}  // namespace pool::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(pool::detail::submission)
