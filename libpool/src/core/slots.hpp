// A model's worker slots and their rules, without an actor: credits per lane,
// which worker gets the next job, restart backoff and intensity, the stuck
// rule, the memory budget a local slot holds, and the slots lent by worker
// nodes. The supervisor keeps the workers' actor handles (by slot id) and
// turns what these functions return into sends and log lines.
//
// Not thread-safe: one supervisor owns a table (the memory budget it shares
// with other models is thread-safe).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <unordered_set>
#include <variant>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/node_id.hpp>

#include "core/time.hpp"
#include "defaults.hpp"
#include "memory_budget.hpp"
#include "pool/config.hpp"
#include "pool/protocol.hpp"

namespace pool::detail::core {

using pool::worker_state;  // the states of a slot (pool/protocol.hpp)

inline size_t lane_index(lane ln) {
  return static_cast<size_t>(ln);
}

/// One worker slot. `id` is its index in the table and never changes; the
/// worker in it may (restarts, replacements, scale-up into an evicted slot,
/// a worker node joining again).
struct slot {
  uint32_t id = 0;
  bool remote = false;  // lent by a worker node
  std::string node = "local";
  caf::node_id node_id;   // of a lent worker: the node that joined with it
  time_point lost_since;  // when a lent worker was lost
  /// A worker is attached: the supervisor holds its handle.
  bool attached = false;
  /// Counts scheduled restarts: a restart timer of an older one is stale.
  uint32_t generation = 0;
  worker_state state = worker_state::stopped;
  uint32_t credits[2] = {0, 0};       // per lane: jobs it may still be sent
  std::unordered_set<uint64_t> jobs;  // dispatch ids the worker holds
  /// Holds a retried job and nothing else: no other job is sent to it until
  /// that one is answered, so a text that breaks every worker it reaches
  /// takes no innocent job down with it (ledger::send, ledger::pump).
  bool isolating = false;
  /// Takes no new work, so that it runs dry for a retry that waits for an
  /// idle worker (ledger::pump marks one such worker per waiting retry).
  bool kept_for_retry = false;
  bool ping_outstanding = false;
  bool missed_logged = false;
  uint64_t ping_seq = 0;
  time_point ping_sent;
  time_point last_pong;
  bool ever_ponged = false;
  worker_report report;  // from its last pong
  uint64_t completed = 0;
  uint64_t failed = 0;
  uint32_t restarts = 0;
  std::deque<time_point> restart_times;  // within pool.restart-window
  time_point idle_since;                 // when the worker last held no job
  bool reserved = false;                 // holds worker_bytes of the memory budget

  /// Serves or will serve again: ready, restarting or stuck (a replacement
  /// is on its way).
  bool live() const {
    return state == worker_state::ready || state == worker_state::restarting ||
           state == worker_state::stuck;
  }
};

/// A dead local worker is restarted after `backoff`: the supervisor sends
/// itself `(restart_atom, slot, generation)` then.
struct restart {
  caf::timespan backoff;
  uint32_t generation = 0;
  uint64_t recent_restarts = 0;  // within pool.restart-window, this one included
};

/// A slot was given up (its state is given_up and its memory released).
struct give_up {
  const char* reason = "";
};

using restart_decision = std::variant<restart, give_up>;

/// What a heartbeat tick asks for one slot.
struct send_ping {
  uint64_t seq = 0;  // send `(ping_atom, seq)` at high priority
};
struct heartbeat_missed {
  caf::timespan silent;  // no pong for longer than heartbeat.interval (once)
};
struct worker_stuck {
  caf::timespan silent;  // no pong within heartbeat.timeout
};
using heartbeat_verdict =
    std::variant<std::monostate, send_ping, heartbeat_missed, worker_stuck>;

/// What became of a stuck worker's slot (already applied to the slot).
enum class stuck_fate {
  lost,     // a lent worker: it only stops receiving work
  replace,  // start a replacement in the slot now
  give_up,  // pool.max-abandoned passed: the slot was given up
  stopped,  // draining: no replacement
};

/// What a pong did.
enum class pong_result { ignored, taken, recovered };

/// A lost lent worker's slot freed for any node.
struct slot_freed {
  uint32_t slot = 0;
  std::string node;
  caf::timespan lost_for;
};

/// The figures of a spawn refused for the memory budget.
struct budget_refusal {
  uint64_t needed_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t budget_bytes = 0;
  uint32_t workers = 0;  // live local workers
};

class slot_table {
 public:
  /// `budget` is shared with the node's other models (null = no limit of
  /// its own): the model's `weights_bytes` are reserved at once, whatever the
  /// limit, and each local slot reserves `worker_bytes`. Dispatch ids and
  /// ping numbers come from a generator seeded with `seed`.
  slot_table(const pool_section& pool, const heartbeat_section& heartbeat,
             std::shared_ptr<memory_budget> budget, uint64_t worker_bytes,
             uint64_t weights_bytes = 0, uint64_t seed = std::random_device{}());
  /// Gives back the weights and what the slots still reserve.
  ~slot_table();
  slot_table(const slot_table&) = delete;
  slot_table& operator=(const slot_table&) = delete;

  // -- the table ---------------------------------------------------------------

  size_t size() const { return slots_.size(); }
  slot& operator[](uint32_t id) { return slots_[id]; }
  const slot& operator[](uint32_t id) const { return slots_[id]; }
  std::vector<slot>& all() { return slots_; }
  const std::vector<slot>& all() const { return slots_; }

  /// A new local slot (stopped, nothing attached), reserving its worker's
  /// bytes; `force` ignores the limit. Null (nothing added) if the reservation
  /// would pass the budget. The caller keeps the table within `max_slots`.
  slot* add_local(bool force);

  /// Least-loaded ready worker with at least `need` credits on `ln`: most
  /// credits left, then the smallest reported queue depth; ties broken
  /// round-robin. Never a worker that is `isolating` a retried job; with
  /// `idle` (for a retry), only a worker that holds no job at all; without,
  /// never one `kept_for_retry`. Null if none.
  slot* pick(lane ln, uint32_t need = 1, bool idle = false);
  /// Keeps `n` ready workers for retries (`slot::kept_for_retry`), the ones
  /// holding the fewest jobs, none that is isolating a retry already; every
  /// other worker takes new work again. `n` = 0 releases all.
  void keep_for_retries(size_t n);
  /// The credits a request of `weight` (`request_weight`) takes on `ln`: its
  /// weight, at most the lane's capacity (so that a list longer than the
  /// lane still fits an idle worker).
  uint32_t credits_for(lane ln, uint64_t weight) const;

  bool any_live() const;
  /// Local workers that serve or will serve again (ready, restarting, stuck).
  uint32_t live_local() const;
  uint32_t ready() const;
  /// Credits in use at ready workers (local and lent): jobs they hold.
  uint64_t credits_in_use() const;

  // -- a worker's life ------------------------------------------------------------

  /// A worker was attached to `s`: full credits, ready for work, pinged at
  /// the next heartbeat tick.
  void attach(slot& s, time_point now);
  /// A local worker was spawned into `s`: attached and idle since `now`.
  void started(slot& s, time_point now);
  /// A restart or a stuck worker's replacement was spawned into `s`.
  void restarted(slot& s, time_point now);
  /// A worker's handle was taken out of `s` (it died, is stuck, evicted,
  /// left, or the pool stopped).
  void detached(slot& s) { s.attached = false; }

  /// A dead local worker: restart after pool.restart-backoff * 2^k (capped
  /// at pool.restart-backoff-max, k = restarts within pool.restart-window so
  /// far), or give the slot up once pool.max-restarts fell in the window.
  restart_decision schedule_restart(slot& s, time_point now);
  /// True if a `(restart_atom, id, generation)` timer is still due (the slot
  /// waits for exactly that restart) and the pool is not draining.
  bool restart_due(uint32_t id, uint32_t generation, bool draining) const;
  /// Gives `s` up for good and releases its memory.
  give_up give_up_slot(slot& s, const char* reason);
  /// A local worker that died while draining: not restarted.
  void stop(slot& s) { s.state = worker_state::stopped; }
  /// A lent worker died (its node took it back if it was leaving).
  void lose(slot& s, time_point now);

  /// The heartbeat rule for one ready or leaving slot (others: nothing): one
  /// ping outstanding at most, sent heartbeat.interval after the previous;
  /// no pong for longer than heartbeat.interval -> missed (reported once);
  /// longer than heartbeat.timeout -> stuck.
  heartbeat_verdict heartbeat(slot& s, time_point now);
  /// A pong numbered `seq`: taken only for the outstanding ping.
  pong_result pong(slot& s, uint64_t seq, const worker_report& report, time_point now);
  /// A worker stuck (its handle already taken out): a lent one is lost; a
  /// local one is abandoned and replaced, unless pool.max-abandoned passed
  /// (given up) or the pool drains (stopped).
  stuck_fate stuck(slot& s, time_point now, bool draining);

  /// An idle local worker is evicted: no credits, no ping, memory released.
  void evict(slot& s);
  /// Stops every slot and releases all memory (the end of a drain).
  void stop_all();

  // -- memory budget --------------------------------------------------------------

  /// Takes a worker's share of the budget for `s`; `force` ignores the
  /// limit. False (nothing taken) if that would pass the budget.
  bool reserve(slot& s, bool force);
  void release(slot& s);
  budget_refusal refusal() const;
  const memory_budget& budget() const { return *budget_; }

  // -- lent workers --------------------------------------------------------------

  /// Slots a node's live lent workers hold (ready or leaving).
  uint32_t live_slots_of(const caf::node_id& node) const;
  /// The name a node joins with: refused if empty, "local", longer than 128
  /// bytes, or held by live workers of another node.
  caf::error check_join_name(const caf::node_id& node, const std::string& name) const;
  /// Slots for `count` new lent workers of `node`: reusable ones first (lost
  /// or left ones of the same name, then freed ones), new ones for the rest.
  /// Refused (nothing changed) past cluster.max-workers-per-node or the
  /// table's bound. The slots returned name the node, with zeroed counts;
  /// attach a worker to each.
  caf::expected<std::vector<uint32_t>> plan_join(const caf::node_id& node,
                                                 const std::string& name, size_t count,
                                                 uint32_t max_per_node);
  /// A node takes its workers back: its ready ones start leaving. False if
  /// it holds none (through this connection).
  bool leave(const caf::node_id& node, const std::string& name);
  /// True while a leaving worker of `name` still holds a job.
  bool leaving_busy(const std::string& name) const;
  /// Marks the leaving workers of `name` left; returns their slots (detach
  /// their handles).
  std::vector<uint32_t> mark_left(const std::string& name);
  /// Frees the slots of workers lost for at least `expiry`.
  std::vector<slot_freed> expire_lost(time_point now, caf::timespan expiry);

  // -- counters --------------------------------------------------------------------

  uint64_t restarts_total() const { return restarts_total_; }
  uint64_t abandoned() const { return abandoned_; }
  uint64_t spawned() const { return spawned_; }
  uint64_t evicted() const { return evicted_; }
  uint64_t given_up() const { return given_up_; }
  uint32_t embed_capacity() const { return embed_capacity_; }
  uint32_t batch_capacity() const { return batch_capacity_; }

  /// A random number for a dispatch id or a ping: nobody else can guess one,
  /// so an answer from a worker node is taken only for what was sent.
  uint64_t random() { return ids_(); }

 private:
  std::vector<slot> slots_;
  uint32_t rr_cursor_ = 0;
  size_t kept_ = 0;  // marked by the last keep_for_retries (some may have left)
  uint32_t embed_capacity_;
  uint32_t batch_capacity_;
  caf::timespan heartbeat_interval_;
  caf::timespan heartbeat_timeout_;
  caf::timespan restart_backoff_;
  caf::timespan restart_backoff_max_;
  uint32_t max_restarts_;
  caf::timespan restart_window_;
  uint32_t max_abandoned_;
  std::shared_ptr<memory_budget> budget_;  // never null
  uint64_t worker_bytes_;
  uint64_t weights_bytes_;
  uint64_t reserved_bytes_ = 0;  // by the slots
  uint64_t restarts_total_ = 0;
  uint64_t abandoned_ = 0;
  uint64_t spawned_ = 0;
  uint64_t evicted_ = 0;
  uint64_t given_up_ = 0;
  std::mt19937_64 ids_;
};

}  // namespace pool::detail::core
