#include <algorithm>
#include <deque>
#include <iterator>
#include <random>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/middleman_actor.hpp>
#include <caf/openssl/manager.hpp>

#include "actors.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "peer_guard.hpp"
#include "request_log.hpp"

namespace pool::detail {

namespace {

using clock_type = caf::actor_clock::clock_type;
using time_point = caf::actor_clock::time_point;

/// How often the supervisor checks deadlines, heartbeats and the drain.
constexpr caf::timespan max_tick = std::chrono::milliseconds(100);
/// How long without a rejection ends an overload episode.
constexpr caf::timespan overload_quiet = std::chrono::seconds(1);
/// Minimum spacing of `shed` log lines during an overload episode.
constexpr caf::timespan shed_log_interval = std::chrono::seconds(1);
/// Republishing a replaced gateway: attempts and spacing while the
/// middleman closes the old socket.
constexpr int max_republish_attempts = 50;
constexpr caf::timespan republish_delay = std::chrono::milliseconds(100);
using publish_atom_retry = caf::atom_constant<caf::atom("republish")>;
/// Most worker slots (local and lent) one supervisor keeps.
constexpr size_t max_slots = 4096;
/// How long past its drain deadline the default model's supervisor waits for
/// the other models' supervisors to finish their drain.
constexpr caf::timespan other_models_grace = std::chrono::seconds(2);

/// Local slots: ready -> (died) restarting -> ready | given_up; (stuck) ->
/// replaced at once; ready and idle for pool.idle-cooldown -> evicted (a
/// scale-up may start a new worker in an evicted slot). Remote slots (lent by worker
/// nodes): ready -> leaving -> left, or -> lost when the worker or its node dies or goes
/// silent.
enum class slot_state {
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

/// The text of a state: its entry in `worker_states`, which lists every
/// state a slot can report (and so every state the metrics render).
const char* to_string(slot_state x) {
  static_assert(std::size(worker_states) == static_cast<size_t>(slot_state::freed) + 1,
                "worker_states names every slot_state in order");
  return worker_states[static_cast<size_t>(x)];
}

int64_t to_ms(caf::timespan d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

struct worker_slot {
  uint32_t id = 0;
  bool remote = false;  // lent by a worker node
  std::string node = "local";
  caf::node_id node_id;   // of a lent worker: the node that joined with it
  time_point lost_since;  // when a lent worker was lost
  caf::actor handle;
  uint32_t generation = 0;
  slot_state state = slot_state::stopped;
  uint32_t credits[2] = {0, 0};
  std::unordered_set<uint64_t> jobs;  // dispatch ids the worker holds
  bool ping_outstanding = false;
  bool missed_logged = false;
  uint64_t ping_seq = 0;
  time_point ping_sent;
  time_point last_pong;
  bool ever_ponged = false;
  worker_report report;
  uint64_t completed = 0;
  uint64_t failed = 0;
  uint32_t restarts = 0;
  std::deque<time_point> restart_times;  // within pool.restart-window
  time_point idle_since;                 // when the worker last held no job
  bool reserved = false;                 // holds worker_bytes of the memory budget
};

struct request_entry {
  uint64_t id = 0;
  lane ln = lane::embed;
  shared_texts texts;  // shared with the job a local worker holds
  std::string task;
  /// Who gets the answer (the gateway, or a test's probe) and its ticket.
  caf::actor reply_to;
  uint64_t ticket = 0;
  time_point deadline;
  time_point accepted_at;
  uint32_t attempts = 0;
  uint64_t dispatch_id = 0;  // 0 while pending
  uint64_t charged = 0;      // bytes of the node's byte_budget it holds
  request_origin origin;     // its id and sender, for the log lines about it
};

struct dispatch_entry {
  uint32_t slot = 0;
  uint64_t request_id = 0;
  lane ln = lane::embed;
  /// Bytes of a request answered (expired) while its worker still holds the
  /// job: given back when the worker answers or dies.
  uint64_t charged = 0;
};

struct supervisor_state {
  static inline const char* name = "embedpool.supervisor";

  supervisor_config cfg;
  std::vector<worker_slot> slots;
  std::unordered_map<caf::actor_addr, uint32_t> slot_by_addr;
  std::unordered_map<uint64_t, request_entry> requests;  // accepted, unanswered
  std::unordered_map<uint64_t, dispatch_entry> dispatches;
  std::deque<uint64_t> pending[2];  // request ids waiting for credit, per lane
  uint64_t next_request_id = 1;
  /// Dispatch ids and ping numbers are random: an answer from a worker node
  /// is taken only for a job or ping this supervisor sent, and nobody else
  /// can guess one.
  std::mt19937_64 ids{std::random_device{}()};
  uint32_t rr_cursor = 0;
  ledger_counters ledger;
  uint64_t restarts_total = 0;
  uint64_t abandoned = 0;
  bool draining = false;
  time_point drain_deadline;
  caf::actor gateway;
  std::shared_ptr<admission_gate> gate;
  std::shared_ptr<byte_budget> bytes;  // never null once started
  uint16_t bound_port = 0;
  bool overloaded = false;
  uint64_t shed_unlogged = 0;
  uint64_t shed_episode = 0;
  time_point last_shed;
  time_point last_shed_log;
  time_point last_stats;
  /// Worker nodes leaving: answered once none of their workers holds a job.
  std::unordered_map<std::string, caf::response_promise> leaving_nodes;
  std::shared_ptr<model_metrics> metrics;  // never null once started
  std::shared_ptr<spdlog::logger> log = get_logger("supervisor");
  /// Bounds the lines about single requests (request_log.hpp).
  request_log_limiter request_lines;
  worker_limits limits;
  std::shared_ptr<memory_budget> budget;
  uint64_t reserved_bytes = 0;  // this supervisor's share of `budget`
  /// Queue depth above the scale-up threshold since `depth_above_since`.
  bool depth_above = false;
  time_point depth_above_since;
  /// A refused scale-up is logged once per episode above the threshold.
  bool refusal_logged = false;
  /// Supervisors of the node's other models (default model only): alive,
  /// monitored, drained with this one.
  std::vector<model_route> other_models;
  uint64_t workers_spawned = 0;
  uint64_t workers_evicted = 0;
  uint64_t workers_given_up = 0;

  // The gateway and local workers monitor their supervisor and quit with it.
  ~supervisor_state() {
    for (auto& m : other_models)
      caf::anon_send_exit(m.supervisor, caf::exit_reason::kill);
    if (budget)
      budget->release(reserved_bytes);
  }
};

using supervisor_actor = caf::stateful_actor<supervisor_state>;

size_t lane_index(lane ln) {
  return static_cast<size_t>(ln);
}

/// Writes a supervisor event; on a node with several models it names the
/// model (`model=NAME` last).
void write_event(supervisor_actor* self, const log_event& ev,
                 spdlog::level::level_enum lvl) {
  auto& st = self->state;
  if (st.cfg.model_names.size() <= 1) {
    ev.write(*st.log, lvl);
    return;
  }
  auto named = ev;
  named.add("model", st.cfg.model_name);
  named.write(*st.log, lvl);
}

void info(supervisor_actor* self, const log_event& ev) {
  write_event(self, ev, spdlog::level::info);
}

void warn(supervisor_actor* self, const log_event& ev) {
  write_event(self, ev, spdlog::level::warn);
}

bool any_live_slot(const supervisor_state& st) {
  return std::any_of(st.slots.begin(), st.slots.end(), [](const worker_slot& s) {
    return s.state == slot_state::ready || s.state == slot_state::restarting ||
           s.state == slot_state::stuck;
  });
}

size_t pending_total(const supervisor_state& st) {
  return st.pending[0].size() + st.pending[1].size();
}

/// Least-loaded ready worker with credit on `ln`: most credits left, then the
/// smallest reported queue depth; ties broken round-robin.
worker_slot* pick_slot(supervisor_state& st, lane ln) {
  worker_slot* best = nullptr;
  auto n = st.slots.size();
  auto li = lane_index(ln);
  for (size_t k = 0; k < n; ++k) {
    auto& s = st.slots[(st.rr_cursor + k) % n];
    if (s.state != slot_state::ready || s.credits[li] == 0)
      continue;
    if (best == nullptr || s.credits[li] > best->credits[li] ||
        (s.credits[li] == best->credits[li] &&
         s.report.queue_depth < best->report.queue_depth))
      best = &s;
  }
  if (best != nullptr)
    st.rr_cursor = (best->id + 1) % static_cast<uint32_t>(n);
  return best;
}

uint64_t micros_between(time_point from, time_point to) {
  return to > from ? static_cast<uint64_t>(
                         std::chrono::duration_cast<std::chrono::microseconds>(to - from)
                             .count())
                   : 0;
}

/// Records the end-to-end time of an accepted request that is being answered
/// (every outcome: completed, failed, expired).
void observe_answered(supervisor_actor* self, const request_entry& req) {
  self->state.metrics->end_to_end.observe(
      micros_between(req.accepted_at, self->clock().now()));
}

/// Forgets an accepted request. Its bytes go back to the node's budget, or,
/// if a worker still holds its job, to the dispatch until the worker is done.
std::unordered_map<uint64_t, request_entry>::iterator erase_request(
    supervisor_state& st, std::unordered_map<uint64_t, request_entry>::iterator it) {
  auto& req = it->second;
  auto d =
      req.dispatch_id != 0 ? st.dispatches.find(req.dispatch_id) : st.dispatches.end();
  if (d != st.dispatches.end())
    d->second.charged += req.charged;
  else
    st.bytes->give_back(req.charged);
  return st.requests.erase(it);
}

/// Forgets a dispatch once its worker answered or is gone.
void erase_dispatch(supervisor_state& st,
                    std::unordered_map<uint64_t, dispatch_entry>::iterator d) {
  st.bytes->give_back(d->second.charged);
  st.dispatches.erase(d);
}

/// Sends to a worker. Workers on other nodes get it from the gateway, the
/// only actor of this node that other nodes may know (and so address).
template <caf::message_priority P = caf::message_priority::normal, class... Ts>
void send_to_worker(supervisor_actor* self, worker_slot& slot, Ts&&... xs) {
  if (slot.handle->node() == self->node()) {
    self->send<P>(slot.handle, std::forward<Ts>(xs)...);
    return;
  }
  if (self->state.gateway)
    caf::send_as<P>(self->state.gateway, slot.handle, std::forward<Ts>(xs)...);
}

void dispatch(supervisor_actor* self, request_entry& req, worker_slot& slot) {
  auto& st = self->state;
  if (req.attempts == 0)
    st.metrics->queue_wait.observe(micros_between(req.accepted_at, self->clock().now()));
  auto li = lane_index(req.ln);
  --slot.credits[li];
  uint64_t did = 0;
  while (did == 0 || st.dispatches.count(did) > 0)
    did = st.ids();
  slot.jobs.insert(did);
  st.dispatches.emplace(did, dispatch_entry{slot.id, req.id, req.ln});
  req.dispatch_id = did;
  ++req.attempts;
  auto left = std::max<int64_t>(1, std::chrono::duration_cast<std::chrono::nanoseconds>(
                                       req.deadline - self->clock().now())
                                       .count());
  send_to_worker(self, slot, work_atom::value,
                 job{did, static_cast<uint8_t>(req.ln), req.texts, req.task,
                     req.attempts > 1, left});
}

/// Answers an accepted request with an error and logs it: `request_expired`
/// for a deadline, `request_failed` for anything else.
void answer_error(supervisor_actor* self, request_entry& req, caf::error err) {
  auto& st = self->state;
  const bool expired = pool_code(err) == pool_errc::deadline_exceeded;
  log_request(st.request_lines, *st.log, spdlog::level::warn,
              expired ? "request_expired" : "request_failed", req.origin,
              st.cfg.model_name, [&](log_event& ev) {
                add_answer_error(ev, err)
                    .add("attempts", req.attempts)
                    .add("age_ms", to_ms(self->clock().now() - req.accepted_at));
              });
  observe_answered(self, req);
  self->state.metrics->count_reply(reply_code(err));
  self->send(req.reply_to, answer_atom::value, req.ticket, std::move(err));
}

void check_ledger(const supervisor_state& st) {
  auto& l = st.ledger;
  if (l.accepted != l.completed + l.failed + l.expired + st.requests.size())
    get_logger("supervisor")
        ->critical(
            "event=ledger_mismatch accepted={} completed={} failed={} expired={} "
            "in_flight={}",
            l.accepted, l.completed, l.failed, l.expired, st.requests.size());
}

void finish_drain(supervisor_actor* self);
void check_leaving(supervisor_actor* self);

/// Dispatches parked requests while workers have credit.
void pump(supervisor_actor* self) {
  auto& st = self->state;
  for (auto ln : {lane::embed, lane::batch}) {
    auto& q = st.pending[lane_index(ln)];
    while (!q.empty()) {
      auto it = st.requests.find(q.front());
      if (it == st.requests.end()) {
        q.pop_front();
        continue;
      }
      auto* slot = pick_slot(st, ln);
      if (slot == nullptr)
        break;
      q.pop_front();
      dispatch(self, it->second, *slot);
    }
  }
}

void maybe_finish_drain(supervisor_actor* self) {
  auto& st = self->state;
  if (st.draining && st.requests.empty() && st.other_models.empty())
    finish_drain(self);
}

/// Answers every accepted request that is still waiting with `err` (counted
/// as failed).
void fail_all_pending(supervisor_actor* self, pool_errc code, const std::string& why) {
  auto& st = self->state;
  for (auto& q : st.pending) {
    for (auto id : q) {
      auto it = st.requests.find(id);
      if (it == st.requests.end())
        continue;
      answer_error(self, it->second, make_error(code, why));
      ++st.ledger.failed;
      erase_request(st, it);
    }
    q.clear();
  }
}

/// Logs that `req` goes back to the queue after worker `worker` failed it.
void log_retry(supervisor_actor* self, const request_entry& req, uint32_t worker,
               const std::string& why) {
  auto& st = self->state;
  log_request(st.request_lines, *st.log, spdlog::level::info, "request_retried",
              req.origin, st.cfg.model_name, [&](log_event& ev) {
                ev.add("worker", worker).add("attempts", req.attempts).add("reason", why);
              });
}

/// Takes every job away from a worker that died or got stuck: each request is
/// re-dispatched (embedding is a pure function, a retry is safe) until it has
/// been tried `pool.max-attempts` times, then answered `worker_failed`.
void requeue_jobs(supervisor_actor* self, worker_slot& slot, const std::string& why) {
  auto& st = self->state;
  std::vector<uint64_t> retry;
  for (auto did : slot.jobs) {
    auto d = st.dispatches.find(did);
    if (d == st.dispatches.end())
      continue;
    auto rid = d->second.request_id;
    erase_dispatch(st, d);
    auto it = st.requests.find(rid);
    if (it == st.requests.end())
      continue;  // already answered (deadline passed)
    auto& req = it->second;
    req.dispatch_id = 0;
    if (req.attempts >= st.cfg.pool.max_attempts) {
      answer_error(self, req,
                   make_error(pool_errc::worker_failed, "request failed on " +
                                                            std::to_string(req.attempts) +
                                                            " worker(s); last: " + why));
      ++st.ledger.failed;
      erase_request(st, it);
    } else {
      retry.push_back(rid);
    }
  }
  slot.jobs.clear();
  // Oldest first at the front of the queues: retried work goes before new work.
  std::sort(retry.begin(), retry.end(), std::greater<uint64_t>());
  for (auto rid : retry) {
    auto& req = st.requests[rid];
    log_retry(self, req, slot.id, why);
    st.pending[lane_index(req.ln)].push_front(rid);
  }
  if (!retry.empty())
    info(self, log_event("requests_redispatched")
                   .add("worker", slot.id)
                   .add("count", static_cast<uint64_t>(retry.size())));
}

/// Puts `handle` into `slot` with full credits, ready for work and pings.
void attach_worker(supervisor_actor* self, worker_slot& slot, caf::actor handle) {
  auto& st = self->state;
  slot.handle = std::move(handle);
  self->monitor(slot.handle);
  st.slot_by_addr[slot.handle.address()] = slot.id;
  slot.credits[0] = st.cfg.pool.embed_queue_capacity;
  slot.credits[1] = st.cfg.pool.batch_queue_capacity;
  slot.state = slot_state::ready;
  slot.ping_outstanding = false;
  slot.missed_logged = false;
  slot.ever_ponged = false;
  slot.report = worker_report{};
  slot.last_pong = self->clock().now();
  slot.ping_sent = slot.last_pong - st.cfg.heartbeat.interval;  // ping at next tick
}

void spawn_into(supervisor_actor* self, worker_slot& slot) {
  attach_worker(self, slot, self->state.cfg.make_worker(self, slot.id));
  slot.idle_since = self->clock().now();
  ++self->state.workers_spawned;
}

/// Takes a worker's share of the memory budget for `slot`; `force` ignores
/// the limit. False (nothing taken) if the spawn would pass the budget.
bool reserve_worker(supervisor_state& st, worker_slot& slot, bool force) {
  if (slot.reserved)
    return true;
  auto bytes = st.cfg.worker_bytes;
  if (force)
    st.budget->reserve(bytes);
  else if (!st.budget->try_reserve(bytes))
    return false;
  st.reserved_bytes += bytes;
  slot.reserved = true;
  return true;
}

void release_worker(supervisor_state& st, worker_slot& slot) {
  if (!slot.reserved)
    return;
  st.budget->release(st.cfg.worker_bytes);
  st.reserved_bytes -= st.cfg.worker_bytes;
  slot.reserved = false;
}

/// Local workers that serve or will serve again (ready, restarting, stuck).
uint32_t live_local_workers(const supervisor_state& st) {
  return static_cast<uint32_t>(
      std::count_if(st.slots.begin(), st.slots.end(), [](const worker_slot& s) {
        return !s.remote &&
               (s.state == slot_state::ready || s.state == slot_state::restarting ||
                s.state == slot_state::stuck);
      }));
}

log_event refused_for_budget(const supervisor_state& st, const char* phase) {
  return log_event("scale_up_refused")
      .add("reason", "memory_budget")
      .add("phase", phase)
      .add("needed_bytes", st.cfg.worker_bytes)
      .add("used_bytes", st.budget->used())
      .add("budget_bytes", st.budget->limit())
      .add("workers", live_local_workers(st));
}

/// Removes a worker's handle from the routing tables.
void detach_handle(supervisor_actor* self, worker_slot& slot) {
  if (!slot.handle)
    return;
  self->state.slot_by_addr.erase(slot.handle.address());
  slot.handle = nullptr;
}

/// Answers every leaving node none of whose workers holds a job any more,
/// marking those workers left.
void check_leaving(supervisor_actor* self) {
  auto& st = self->state;
  for (auto it = st.leaving_nodes.begin(); it != st.leaving_nodes.end();) {
    bool busy = false;
    uint32_t count = 0;
    for (auto& s : st.slots) {
      if (!s.remote || s.node != it->first)
        continue;
      if (s.state == slot_state::leaving && !s.jobs.empty())
        busy = true;
    }
    if (busy) {
      ++it;
      continue;
    }
    for (auto& s : st.slots) {
      if (s.remote && s.node == it->first && s.state == slot_state::leaving) {
        self->demonitor(s.handle);
        detach_handle(self, s);
        s.state = slot_state::left;
        ++count;
      }
    }
    info(self, log_event("node_left").add("node", it->first).add("workers", count));
    it->second.deliver(count);
    it = st.leaving_nodes.erase(it);
  }
}

void give_up(supervisor_actor* self, worker_slot& slot, const char* reason) {
  slot.state = slot_state::given_up;
  release_worker(self->state, slot);
  ++self->state.workers_given_up;
  warn(self, log_event("worker_given_up").add("worker", slot.id).add("reason", reason));
  if (!any_live_slot(self->state))
    fail_all_pending(self, pool_errc::unavailable, "no worker left: all were given up");
}

void schedule_restart(supervisor_actor* self, worker_slot& slot) {
  auto& st = self->state;
  auto now = self->clock().now();
  while (!slot.restart_times.empty() &&
         now - slot.restart_times.front() > st.cfg.pool.restart_window)
    slot.restart_times.pop_front();
  if (slot.restart_times.size() >= st.cfg.pool.max_restarts) {
    give_up(self, slot, "restart intensity exceeded");
    return;
  }
  slot.restart_times.push_back(now);
  auto exponent = std::min<size_t>(slot.restart_times.size() - 1, 20);
  auto backoff = st.cfg.pool.restart_backoff * (int64_t{1} << exponent);
  backoff = std::min(backoff, st.cfg.pool.restart_backoff_max);
  slot.state = slot_state::restarting;
  ++slot.generation;
  info(self,
       log_event("worker_restart_scheduled")
           .add("worker", slot.id)
           .add("backoff_ms", to_ms(backoff))
           .add("recent_restarts", static_cast<uint64_t>(slot.restart_times.size())));
  self->delayed_send(self, backoff, restart_atom::value, slot.id, slot.generation);
}

/// A worker that missed its heartbeat: stop routing to it, re-dispatch its
/// work, abandon its thread (C++ cannot preempt it) and start a replacement.
void replace_stuck(supervisor_actor* self, worker_slot& slot, caf::timespan silent) {
  auto& st = self->state;
  warn(self, log_event("worker_stuck")
                 .add("worker", slot.id)
                 .add("silent_ms", to_ms(silent))
                 .add("jobs", static_cast<uint64_t>(slot.jobs.size())));
  self->demonitor(slot.handle);
  if (!slot.remote)
    self->send_exit(slot.handle, caf::exit_reason::kill);
  detach_handle(self, slot);
  if (slot.remote) {
    slot.lost_since = self->clock().now();
    // A silent remote worker (or a frozen node): its node replaces it if it
    // is alive; here it only stops receiving work.
    slot.state = slot_state::lost;
    requeue_jobs(self, slot, "remote worker silent (no pong within heartbeat.timeout)");
    check_leaving(self);
    pump(self);
    maybe_finish_drain(self);
    return;
  }
  ++st.abandoned;
  slot.state = slot_state::stuck;
  requeue_jobs(self, slot, "worker stuck (no pong within heartbeat.timeout)");
  if (st.abandoned > st.cfg.pool.max_abandoned) {
    give_up(self, slot, "pool.max-abandoned reached");
  } else if (!st.draining) {
    spawn_into(self, slot);
    ++slot.restarts;
    ++st.restarts_total;
    info(self, log_event("worker_replaced")
                   .add("worker", slot.id)
                   .add("abandoned", st.abandoned));
  } else {
    slot.state = slot_state::stopped;
  }
  pump(self);
  maybe_finish_drain(self);
}

void heartbeat(supervisor_actor* self, time_point now) {
  auto& st = self->state;
  for (auto& slot : st.slots) {
    if (slot.state != slot_state::ready && slot.state != slot_state::leaving)
      continue;
    if (slot.ping_outstanding) {
      auto silent = now - slot.ping_sent;
      if (silent > st.cfg.heartbeat.timeout) {
        replace_stuck(self, slot, silent);
      } else if (silent > st.cfg.heartbeat.interval && !slot.missed_logged) {
        slot.missed_logged = true;
        warn(self, log_event("heartbeat_missed")
                       .add("worker", slot.id)
                       .add("silent_ms", to_ms(silent)));
      }
    } else if (now - slot.ping_sent >= st.cfg.heartbeat.interval) {
      slot.ping_outstanding = true;
      slot.ping_seq = st.ids();
      slot.ping_sent = now;
      send_to_worker<caf::message_priority::high>(self, slot, ping_atom::value,
                                                  slot.ping_seq);
    }
  }
}

void expire_deadlines(supervisor_actor* self, time_point now) {
  auto& st = self->state;
  auto expired_error = [&] {
    return make_error(pool_errc::deadline_exceeded,
                      "request not answered within pool.request-timeout (" +
                          std::to_string(to_ms(st.cfg.pool.request_timeout)) + "ms)");
  };
  for (auto& q : st.pending) {
    for (auto i = q.begin(); i != q.end();) {
      auto it = st.requests.find(*i);
      if (it == st.requests.end()) {
        i = q.erase(i);
      } else if (it->second.deadline <= now) {
        answer_error(self, it->second, expired_error());
        ++st.ledger.expired;
        erase_request(st, it);
        i = q.erase(i);
      } else {
        ++i;
      }
    }
  }
  // Dispatched requests past their deadline are answered now; the worker's
  // result is dropped when it arrives, and only then is its credit returned.
  for (auto it = st.requests.begin(); it != st.requests.end();) {
    if (it->second.dispatch_id != 0 && it->second.deadline <= now) {
      answer_error(self, it->second, expired_error());
      ++st.ledger.expired;
      it = erase_request(st, it);
    } else {
      ++it;
    }
  }
}

void note_shed(supervisor_actor* self, time_point now) {
  auto& st = self->state;
  ++st.shed_unlogged;
  ++st.shed_episode;
  st.last_shed = now;
  if (!st.overloaded) {
    st.overloaded = true;
    st.last_shed_log = now;
    warn(self, log_event("overload_began")
                   .add("policy",
                        st.cfg.pool.policy == overload_policy::wait ? "wait" : "reject")
                   .add("pending", static_cast<uint64_t>(pending_total(st)))
                   .add("in_flight", static_cast<uint64_t>(st.requests.size())));
  }
}

void overload_tick(supervisor_actor* self, time_point now) {
  auto& st = self->state;
  if (!st.overloaded)
    return;
  if (st.shed_unlogged > 0 && now - st.last_shed_log >= shed_log_interval) {
    warn(self, log_event("shed")
                   .add("count", st.shed_unlogged)
                   .add("window_ms", to_ms(now - st.last_shed_log)));
    st.shed_unlogged = 0;
    st.last_shed_log = now;
  }
  if (now - st.last_shed >= overload_quiet) {
    info(self, log_event("overload_ended").add("shed_total", st.shed_episode));
    st.overloaded = false;
    st.shed_episode = 0;
    st.shed_unlogged = 0;
  }
}

/// Requests queued on the pool: parked ones plus credits in use at ready
/// workers (local and lent).
uint64_t queue_depth(const supervisor_state& st) {
  uint64_t depth = pending_total(st);
  for (auto& s : st.slots)
    if (s.state == slot_state::ready)
      depth += (st.cfg.pool.embed_queue_capacity - s.credits[0]) +
               (st.cfg.pool.batch_queue_capacity - s.credits[1]);
  return depth;
}

uint32_t ready_workers(const supervisor_state& st) {
  return static_cast<uint32_t>(
      std::count_if(st.slots.begin(), st.slots.end(),
                    [](const worker_slot& s) { return s.state == slot_state::ready; }));
}

/// Starts one more local worker, in an evicted slot if there is one, unless
/// the pool is at pool.max-workers or the worker would pass the memory
/// budget (both refusals are logged).
void scale_up(supervisor_actor* self, uint64_t depth, uint64_t threshold) {
  auto& st = self->state;
  auto live = live_local_workers(st);
  if (live >= st.limits.max) {
    if (std::exchange(st.refusal_logged, true))
      return;
    warn(self, log_event("scale_up_refused")
                   .add("reason", "max_workers")
                   .add("depth", depth)
                   .add("threshold", threshold)
                   .add("workers", live)
                   .add("max", st.limits.max));
    return;
  }
  worker_slot* slot = nullptr;
  for (auto& candidate : st.slots)
    if (!candidate.remote && candidate.state == slot_state::evicted) {
      slot = &candidate;
      break;
    }
  if (slot == nullptr && st.slots.size() >= max_slots)
    return;
  worker_slot fresh;
  auto& target = slot != nullptr ? *slot : fresh;
  if (!reserve_worker(st, target, false)) {
    if (!std::exchange(st.refusal_logged, true))
      warn(self, refused_for_budget(st, "scale_up").add("depth", depth));
    return;
  }
  if (slot == nullptr) {
    fresh.id = static_cast<uint32_t>(st.slots.size());
    st.slots.push_back(std::move(fresh));
    slot = &st.slots.back();
  }
  slot->restart_times.clear();
  spawn_into(self, *slot);
  info(self, log_event("scale_up")
                 .add("reason", "queue_depth")
                 .add("worker", slot->id)
                 .add("depth", depth)
                 .add("threshold", threshold)
                 .add("window_ms", to_ms(st.cfg.pool.scale_up_window))
                 .add("workers", live + 1)
                 .add("max", st.limits.max));
  pump(self);
}

/// Stops an idle local worker. It holds no job and all its credits are back,
/// so nothing accepted is lost; a late pong from it is ignored.
void evict(supervisor_actor* self, worker_slot& slot, caf::timespan idle) {
  auto& st = self->state;
  self->demonitor(slot.handle);
  self->send_exit(slot.handle, caf::exit_reason::user_shutdown);
  detach_handle(self, slot);
  slot.state = slot_state::evicted;
  slot.credits[0] = slot.credits[1] = 0;
  slot.ping_outstanding = false;
  release_worker(st, slot);
  ++st.workers_evicted;
  info(self, log_event("scale_down")
                 .add("reason", "idle")
                 .add("worker", slot.id)
                 .add("idle_ms", to_ms(idle))
                 .add("cooldown_ms", to_ms(st.cfg.pool.idle_cooldown))
                 .add("workers", live_local_workers(st))
                 .add("min", st.limits.min));
}

/// Adaptive workers, once per tick: one worker more after the queue depth per
/// ready worker stayed above pool.scale-up-queue-depth for
/// pool.scale-up-window; idle workers out after pool.idle-cooldown, never
/// below the minimum.
void autoscale(supervisor_actor* self, time_point now) {
  auto& st = self->state;
  if (st.draining || st.limits.min == st.limits.max)
    return;  // a fixed-size pool
  auto depth = queue_depth(st);
  uint64_t threshold = uint64_t{st.cfg.pool.scale_up_queue_depth} *
                       std::max<uint32_t>(ready_workers(st), 1);
  if (depth > threshold) {
    if (!st.depth_above) {
      st.depth_above = true;
      st.depth_above_since = now;
    } else if (now - st.depth_above_since >= st.cfg.pool.scale_up_window) {
      st.depth_above_since = now;  // the next worker needs a window of its own
      scale_up(self, depth, threshold);
    }
  } else {
    st.depth_above = false;
    st.refusal_logged = false;
  }
  for (auto& slot : st.slots) {
    if (live_local_workers(st) <= st.limits.min)
      break;
    if (slot.remote || slot.state != slot_state::ready || !slot.jobs.empty())
      continue;
    auto idle = now - slot.idle_since;
    if (idle >= st.cfg.pool.idle_cooldown)
      evict(self, slot, idle);
  }
}

pool_status make_status(supervisor_actor* self) {
  auto& st = self->state;
  auto now = self->clock().now();
  pool_status result;
  result.model = st.cfg.model_name;
  result.dim = st.cfg.dim;
  result.policy = st.cfg.pool.policy == overload_policy::wait ? "wait" : "reject";
  result.draining = st.draining;
  for (auto& s : st.slots) {
    worker_status w;
    w.id = s.id;
    w.node = s.node;
    w.state = to_string(s.state);
    w.queue_depth = s.report.queue_depth;
    w.credits_embed = s.credits[0];
    w.credits_batch = s.credits[1];
    w.last_pong_ms = s.ever_ponged ? to_ms(now - s.last_pong) : -1;
    w.completed = s.completed;
    w.failed = s.failed;
    w.restarts = s.restarts;
    result.workers.push_back(std::move(w));
  }
  for (auto& s : st.slots) {
    auto i = std::find_if(result.nodes.begin(), result.nodes.end(),
                          [&](const node_status& n) { return n.node == s.node; });
    if (i == result.nodes.end()) {
      result.nodes.push_back(node_status{s.node, {}, 0, 0});
      i = result.nodes.end() - 1;
    }
    ++i->workers;
    if (s.state == slot_state::ready)
      ++i->ready;
    // up: some worker serves; leaving; otherwise the state all workers share.
    if (s.state == slot_state::ready)
      i->state = "up";
    else if (s.state == slot_state::leaving && i->state != "up")
      i->state = "leaving";
    else if (i->state.empty())
      i->state = s.node == "local" ? "up" : to_string(s.state);
  }
  result.ledger = st.ledger;
  result.ledger.rejected += st.gate ? st.gate->shed.load(std::memory_order_relaxed) : 0;
  result.ledger.in_flight = st.requests.size();
  result.restarts = st.restarts_total;
  result.abandoned = st.abandoned;
  result.pending = pending_total(st);
  result.pending_capacity = st.cfg.pool.pending_capacity;
  result.workers_spawned = st.workers_spawned;
  result.workers_evicted = st.workers_evicted;
  result.workers_given_up = st.workers_given_up;
  result.min_workers = st.limits.min;
  result.max_workers = st.limits.max;
  result.memory_budget_bytes = st.budget->limit();
  result.memory_used_bytes = st.budget->used();
  result.memory_pressure = st.budget->pressure();
  result.models = st.cfg.model_names;
  return result;
}

void log_stats(supervisor_actor* self) {
  auto st_view = make_status(self);
  std::string text = "[";
  std::string json = "[";
  for (size_t i = 0; i < st_view.workers.size(); ++i) {
    auto& w = st_view.workers[i];
    if (i > 0) {
      text += ',';
      json += ',';
    }
    text += std::to_string(w.id) + ":" + w.state +
            ":depth=" + std::to_string(w.queue_depth) +
            ":embed=" + std::to_string(w.credits_embed) +
            ":batch=" + std::to_string(w.credits_batch);
    json += "{\"id\":" + std::to_string(w.id) + ",\"state\":\"" + w.state +
            "\",\"queue_depth\":" + std::to_string(w.queue_depth) +
            ",\"credits_embed\":" + std::to_string(w.credits_embed) +
            ",\"credits_batch\":" + std::to_string(w.credits_batch) + "}";
  }
  text += ']';
  json += ']';
  auto& l = st_view.ledger;
  info(self, log_event("stats")
                 .add("accepted", l.accepted)
                 .add("completed", l.completed)
                 .add("failed", l.failed)
                 .add("rejected", l.rejected)
                 .add("expired", l.expired)
                 .add("in_flight", l.in_flight)
                 .add("pending", st_view.pending)
                 .add("restarts", st_view.restarts)
                 .add_raw("workers", text, json));
}

void finish_drain(supervisor_actor* self) {
  auto& st = self->state;
  for (auto it = st.requests.begin(); it != st.requests.end();) {
    answer_error(self, it->second,
                 make_error(pool_errc::shutting_down,
                            "node shut down before the request finished "
                            "(pool.drain-timeout passed)"));
    ++st.ledger.failed;
    it = erase_request(st, it);
  }
  st.pending[0].clear();
  st.pending[1].clear();
  for (auto d = st.dispatches.begin(); d != st.dispatches.end();)
    d = (st.bytes->give_back(d->second.charged), st.dispatches.erase(d));
  for (auto& slot : st.slots) {
    release_worker(st, slot);
    if (slot.handle) {
      self->demonitor(slot.handle);
      // Lent workers belong to their worker node, which outlives us.
      if (!slot.remote)
        self->send_exit(slot.handle, caf::exit_reason::user_shutdown);
      detach_handle(self, slot);
    }
    slot.state = slot_state::stopped;
  }
  if (st.gateway) {
    self->demonitor(st.gateway);
    self->send_exit(st.gateway, caf::exit_reason::user_shutdown);
    st.gateway = nullptr;
  }
  auto& l = st.ledger;
  info(self, log_event("drained")
                 .add("accepted", l.accepted)
                 .add("completed", l.completed)
                 .add("failed", l.failed)
                 .add("rejected", l.rejected + (st.gate ? st.gate->shed.load() : 0))
                 .add("expired", l.expired));
  st.log->flush();
  self->quit();
}

/// The middleman that publishes the gateway: plain BASP or TLS.
caf::io::middleman_actor publisher(supervisor_actor* self) {
  if (self->state.cfg.tls)
    return self->system().openssl_manager().actor_handle();
  return self->system().middleman().actor_handle();
}

/// Publishes the current gateway on `port`. A republish (after the old
/// gateway died) retries while the middleman is still closing the old socket.
void publish_gateway(supervisor_actor* self, uint16_t port, bool first, int attempt = 0) {
  auto& st = self->state;
  auto mm = publisher(self);
  auto gw = caf::actor_cast<caf::strong_actor_ptr>(st.gateway);
  auto gw_addr = st.gateway.address();
  self->request(mm, caf::infinite, caf::publish_atom::value, port, std::move(gw),
                std::set<std::string>{}, st.cfg.host, true)
      .then(
          [=](uint16_t actual) {
            auto& s = self->state;
            s.bound_port = actual;
            info(self, log_event(first ? "listening" : "gateway_republished")
                           .add("host", s.cfg.host)
                           .add("port", static_cast<unsigned>(actual)));
            if (first && s.cfg.on_listening)
              s.cfg.on_listening(actual);
          },
          [=](caf::error& err) {
            auto& s = self->state;
            if (!first && attempt < max_republish_attempts && s.gateway &&
                s.gateway.address() == gw_addr) {
              self->delayed_send(self, republish_delay, publish_atom_retry::value, port,
                                 attempt + 1);
              return;
            }
            s.log->error("event=publish_failed host={} port={} error=\"{}\"", s.cfg.host,
                         port, describe(err));
            self->quit(err);
          });
}

void start_gateway(supervisor_actor* self) {
  auto& st = self->state;
  std::vector<model_route> routes;
  routes.push_back(model_route{st.cfg.model_name, caf::actor_cast<caf::actor>(self),
                               st.gate, st.bytes});
  routes.insert(routes.end(), st.other_models.begin(), st.other_models.end());
  st.gateway = spawn_gateway(self, std::move(routes), st.cfg.pool, st.cfg.metrics,
                             st.cfg.status_max_age);
  self->monitor(st.gateway);
}

void on_down(supervisor_actor* self, caf::down_msg& msg) {
  auto& st = self->state;
  for (auto m = st.other_models.begin(); m != st.other_models.end(); ++m) {
    if (msg.source != m->supervisor.address())
      continue;
    if (st.draining) {
      log_event("model_drained")
          .add("model", m->name)
          .write(*st.log, spdlog::level::info);
    } else {
      self->state.log->error("event=model_supervisor_died model={} reason=\"{}\"",
                             m->name, describe(msg.reason));
    }
    st.other_models.erase(m);
    maybe_finish_drain(self);
    return;
  }
  if (st.gateway && msg.source == st.gateway.address()) {
    warn(self, log_event("gateway_died").add("reason", describe(msg.reason)));
    st.gateway = nullptr;
    if (st.draining)
      return;
    start_gateway(self);
    if (st.cfg.publish && st.bound_port != 0) {
      self->send(publisher(self), caf::close_atom::value, st.bound_port);
      publish_gateway(self, st.bound_port, false);
    }
    return;
  }
  auto i = st.slot_by_addr.find(msg.source);
  if (i == st.slot_by_addr.end())
    return;
  auto& slot = st.slots[i->second];
  auto why = describe(msg.reason);
  warn(self, log_event("worker_died")
                 .add("worker", slot.id)
                 .add("reason", why)
                 .add("jobs", static_cast<uint64_t>(slot.jobs.size())));
  detach_handle(self, slot);
  requeue_jobs(self, slot, "worker died: " + why);
  if (slot.remote) {
    slot.state = slot.state == slot_state::leaving ? slot_state::left : slot_state::lost;
    slot.lost_since = self->clock().now();
    check_leaving(self);
  } else if (st.draining) {
    slot.state = slot_state::stopped;
  } else {
    schedule_restart(self, slot);
  }
  pump(self);
  check_ledger(st);
  maybe_finish_drain(self);
}

/// A worker's refusal of the input itself (a text over the model's limit):
/// answered at once, never retried, not the worker's fault.
bool is_input_error(const caf::error& err) {
  auto code = pool_code(err);
  return code && (*code == pool_errc::too_large || *code == pool_errc::invalid_input);
}

/// A worker answered a job: return its credit, answer the request unless its
/// deadline already passed, and refill the worker from the pending queue.

void on_job_answer(supervisor_actor* self, uint64_t did, matrix* result,
                   caf::error* failure) {
  auto& st = self->state;
  auto d = st.dispatches.find(did);
  if (d == st.dispatches.end())
    return;  // from a worker that was declared stuck or died meanwhile
  auto& slot = st.slots[d->second.slot];
  if (slot.handle.address() != caf::actor_cast<caf::actor_addr>(self->current_sender()))
    return;
  auto rid = d->second.request_id;
  ++slot.credits[lane_index(d->second.ln)];
  slot.jobs.erase(did);
  erase_dispatch(st, d);
  if (slot.jobs.empty())
    slot.idle_since = self->clock().now();
  auto it = st.requests.find(rid);
  if (result != nullptr) {
    ++slot.completed;
    if (it != st.requests.end()) {
      observe_answered(self, it->second);
      st.metrics->count_reply(0);
      self->send(it->second.reply_to, answer_atom::value, it->second.ticket,
                 std::move(*result));
      ++st.ledger.completed;
      erase_request(st, it);
    }
  } else {
    const bool input_error = is_input_error(*failure);
    if (!input_error)
      ++slot.failed;
    if (it != st.requests.end()) {
      auto& req = it->second;
      req.dispatch_id = 0;
      // Out of time, or the input refused by the worker itself: a retry
      // cannot help.
      bool expired = pool_code(*failure) == pool_errc::deadline_exceeded;
      if (expired || input_error || req.attempts >= st.cfg.pool.max_attempts) {
        if (expired)
          ++st.ledger.expired;
        else
          ++st.ledger.failed;
        answer_error(self, req, std::move(*failure));
        erase_request(st, it);
      } else {
        log_retry(self, req, slot.id, describe(*failure));
        st.pending[lane_index(req.ln)].push_front(rid);
      }
    }
  }
  if (slot.state == slot_state::leaving)
    check_leaving(self);
  pump(self);
  maybe_finish_drain(self);
}

/// Refuses a request without accepting it: counted as rejected in the ledger
/// and as a reply by its code, and answered to the submitter at once.
void refuse(supervisor_actor* self, const submission& sub, caf::error err) {
  auto& st = self->state;
  log_request(st.request_lines, *st.log, spdlog::level::info, "request_rejected",
              sub.origin, st.cfg.model_name,
              [&](log_event& ev) { add_answer_error(ev, err); });
  auto ticket = sub.ticket;
  self->state.bytes->give_back(sub.charged);
  ++self->state.ledger.rejected;
  self->state.metrics->count_reply(reply_code(err));
  self->send(caf::actor_cast<caf::actor>(self->current_sender()), answer_atom::value,
             ticket, std::move(err));
}

/// Takes a submission (from the gateway, which answers the peer): accepts
/// it (dispatch or park) or refuses it; either way it is answered exactly
/// once with `(answer_atom, ticket, matrix | error)`.
void on_submit(supervisor_actor* self, submission& sub) {
  auto& st = self->state;
  auto now = self->clock().now();
  auto ln = sub.ln;
  if (st.draining) {
    refuse(
        self, sub,
        make_error(pool_errc::shutting_down, "node is draining; send to another node"));
    return;
  }
  if (auto err = check_task(sub.task, st.cfg.tasks, st.cfg.model_name)) {
    refuse(self, sub, std::move(err));
    return;
  }
  if (!any_live_slot(st)) {
    refuse(self, sub, make_error(pool_errc::unavailable, "no worker available"));
    return;
  }
  auto* slot = pick_slot(st, ln);
  if (slot == nullptr && (st.cfg.pool.policy == overload_policy::reject ||
                          pending_total(st) >= st.cfg.pool.pending_capacity)) {
    note_shed(self, now);
    refuse(
        self, sub,
        make_error(
            pool_errc::overloaded,
            std::string{"no worker credit available ("} +
                (st.cfg.pool.policy == overload_policy::reject ? "policy reject"
                                                               : "pending queue full") +
                "); retry after " + std::to_string(overload_retry_after_ms) + "ms"));
    return;
  }
  auto id = st.next_request_id++;
  auto& req = st.requests[id];
  req.id = id;
  req.ln = ln;
  req.texts = shared_texts{std::move(sub.texts)};
  req.task = std::move(sub.task);
  req.charged = sub.charged;
  req.deadline = now + st.cfg.pool.request_timeout;
  req.accepted_at = now;
  req.reply_to = caf::actor_cast<caf::actor>(self->current_sender());
  req.ticket = sub.ticket;
  req.origin = std::move(sub.origin);
  ++st.ledger.accepted;
  if (slot != nullptr)
    dispatch(self, req, *slot);
  else
    st.pending[lane_index(ln)].push_back(id);
}

/// Slots a node's live workers hold (not left, lost or freed).
uint32_t live_slots_of(const supervisor_state& st, const caf::node_id& node) {
  return static_cast<uint32_t>(
      std::count_if(st.slots.begin(), st.slots.end(), [&](const worker_slot& s) {
        return s.remote && s.node_id == node &&
               (s.state == slot_state::ready || s.state == slot_state::leaving);
      }));
}

/// Takes lent workers from the worker node `node` (as the gateway saw it):
/// all of them or, with an error, none. Each must live on that node; the
/// node may hold at most cluster.max-workers-per-node; a name that a live
/// node of another connection holds is refused.
caf::result<uint32_t> on_join(supervisor_actor* self, const caf::node_id& node,
                              const std::string& name, std::vector<caf::actor>& workers) {
  auto& st = self->state;
  if (st.draining)
    return make_error(pool_errc::shutting_down, "supervisor is draining");
  if (name.empty() || name == "local" || name.size() > 128)
    return make_error(pool_errc::invalid_input,
                      "join: a worker node needs a name of 1 to 128 bytes other than "
                      "\"local\"");
  for (auto& s : st.slots)
    if (s.remote && s.node == name && s.node_id != node &&
        (s.state == slot_state::ready || s.state == slot_state::leaving))
      return make_error(pool_errc::invalid_input,
                        "join: the name \"" + name + "\" is held by another live node");
  std::vector<caf::actor> fresh;
  for (auto& w : workers) {
    if (!w || w->node() != node)
      return make_error(pool_errc::invalid_input,
                        "join: every worker must live on the joining node");
    if (st.slot_by_addr.count(w.address()) == 0 &&
        std::find(fresh.begin(), fresh.end(), w) == fresh.end())
      fresh.push_back(w);
  }
  auto limit = st.cfg.cluster.max_workers_per_node;
  auto held = live_slots_of(st, node);
  if (held + fresh.size() > limit)
    return make_error(
        pool_errc::too_large,
        "join: node \"" + name + "\" would lend " + std::to_string(held + fresh.size()) +
            " workers; cluster.max-workers-per-node is " + std::to_string(limit));
  // Reusable slots first (lost or left ones of this name, e.g. a worker node
  // that restarted, and freed ones), new slots for the rest, within the
  // table's bound.
  std::vector<size_t> reuse;
  for (size_t i = 0; i < st.slots.size() && reuse.size() < fresh.size(); ++i) {
    auto& s = st.slots[i];
    if (s.remote && !s.handle &&
        ((s.node == name &&
          (s.state == slot_state::lost || s.state == slot_state::left)) ||
         s.state == slot_state::freed))
      reuse.push_back(i);
  }
  if (st.slots.size() + (fresh.size() - reuse.size()) > max_slots)
    return make_error(pool_errc::too_large, "join: supervisor holds too many workers");
  for (size_t k = 0; k < fresh.size(); ++k) {
    worker_slot* slot = nullptr;
    if (k < reuse.size()) {
      slot = &st.slots[reuse[k]];
    } else {
      st.slots.emplace_back();
      slot = &st.slots.back();
      slot->id = static_cast<uint32_t>(st.slots.size() - 1);
      slot->remote = true;
    }
    slot->node = name;
    slot->node_id = node;
    slot->completed = slot->failed = 0;
    attach_worker(self, *slot, fresh[k]);
    info(self, log_event("worker_joined").add("node", name).add("worker", slot->id));
  }
  pump(self);
  return static_cast<uint32_t>(fresh.size());
}

/// A worker node takes its workers back: answered once none holds a job.
/// Only the node that joined with them may (`node` as the gateway saw it).
caf::result<uint32_t> on_leave(supervisor_actor* self, const caf::node_id& node,
                               const std::string& name) {
  auto& st = self->state;
  bool known = false;
  for (auto& slot : st.slots) {
    if (!slot.remote || slot.node_id != node || slot.node != name ||
        slot.state == slot_state::freed)
      continue;
    known = true;
    if (slot.state == slot_state::ready)
      slot.state = slot_state::leaving;
  }
  if (!known)
    return make_error(pool_errc::invalid_input, "leave: no workers of node \"" +
                                                    bounded(name, 128) +
                                                    "\" joined through this connection");
  info(self, log_event("node_leaving").add("node", name));
  auto rp = self->make_response_promise();
  st.leaving_nodes[name] = rp;
  check_leaving(self);
  return caf::delegated<uint32_t>{};
}

/// Frees the slots of worker nodes lost for cluster.lost-node-expiry: any
/// node may take them again.
void expire_lost_slots(supervisor_actor* self, time_point now) {
  auto& st = self->state;
  for (auto& s : st.slots) {
    if (!s.remote || s.state != slot_state::lost ||
        now - s.lost_since < st.cfg.cluster.lost_node_expiry)
      continue;
    info(self, log_event("worker_slot_freed")
                   .add("node", s.node)
                   .add("worker", s.id)
                   .add("lost_ms", to_ms(now - s.lost_since)));
    s.state = slot_state::freed;
    s.node.clear();
    s.node_id = caf::node_id{};
  }
}

caf::behavior supervisor_behavior(supervisor_actor* self, supervisor_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  if (!st.cfg.metrics)
    st.cfg.metrics = std::make_shared<metrics_registry>();
  st.metrics = st.cfg.metrics->model(st.cfg.model_name);
  auto now = self->clock().now();
  st.last_stats = now;
  st.budget = st.cfg.budget ? st.cfg.budget : std::make_shared<memory_budget>(0);
  st.budget->reserve(st.cfg.weights_bytes);
  st.reserved_bytes += st.cfg.weights_bytes;
  if (auto limits = resolve_worker_limits(st.cfg.pool)) {
    st.limits = *limits;
  } else {
    self->quit(limits.error());
    return {};
  }
  st.slots.reserve(st.limits.initial);
  for (uint32_t i = 0; i < st.limits.initial; ++i) {
    worker_slot slot;
    slot.id = i;
    if (!reserve_worker(st, slot, i < st.limits.min)) {
      warn(self, refused_for_budget(st, "start"));
      break;
    }
    st.slots.push_back(std::move(slot));
    spawn_into(self, st.slots.back());
    info(self, log_event("worker_started").add("worker", i));
  }
  if (st.cfg.model_names.empty())
    st.cfg.model_names.push_back(st.cfg.model_name);
  st.gate =
      st.cfg.gate
          ? st.cfg.gate
          : std::make_shared<admission_gate>(admission_gate::limit_for(st.cfg.pool));
  st.bytes = st.cfg.bytes
                 ? st.cfg.bytes
                 : std::make_shared<byte_budget>(st.cfg.pool.max_queued_bytes_mib << 20);
  for (auto& other : st.cfg.other_models) {
    other.publish = false;
    other.with_gateway = false;
    other.budget = st.budget;
    other.drain_signal = st.cfg.drain_signal;
    other.bytes = st.bytes;
    other.metrics = st.cfg.metrics;
    other.model_names = st.cfg.model_names;
    other.gate = std::make_shared<admission_gate>(admission_gate::limit_for(other.pool));
    auto name = other.model_name;
    auto gate = other.gate;
    auto handle = spawn_supervisor(self->system(), std::move(other));
    self->monitor(handle);
    st.other_models.push_back(model_route{name, handle, gate, st.bytes});
  }
  st.cfg.other_models.clear();
  if (st.cfg.with_gateway)
    start_gateway(self);
  if (st.cfg.publish && st.cfg.with_gateway)
    publish_gateway(self, st.cfg.port, true);
  guard_internal_actor(self, "supervisor");
  // A lent worker's down message comes from its proxy (another node); only
  // monitored actors count.
  self->set_down_handler([=](caf::down_msg& msg) { on_down(self, msg); });
  auto tick = std::min(max_tick, st.cfg.heartbeat.interval);
  self->send(self, tick_atom::value);
  return {
      [=](submit_atom, submission& sub) {
        if (from_other_node(self))
          return;
        auto& gate = *self->state.gate;
        if (gate.queued.load(std::memory_order_relaxed) > 0)
          gate.queued.fetch_sub(1, std::memory_order_relaxed);
        on_submit(self, sub);
        check_ledger(self->state);
      },
      [=](status_atom) -> caf::result<pool_status> {
        if (from_other_node(self))
          return make_error(pool_errc::invalid_input, "status: not from a peer");
        return make_status(self);
      },
      [=](gateway_atom) -> caf::result<caf::actor> {
        if (from_other_node(self))
          return make_error(pool_errc::invalid_input, "gateway: not from a peer");
        return self->state.gateway;
      },
      [=](join_atom, caf::node_id& node, std::string& name,
          std::vector<caf::actor>& workers) -> caf::result<uint32_t> {
        if (from_other_node(self))
          return make_error(pool_errc::invalid_input, "join: through the gateway only");
        return on_join(self, node, name, workers);
      },
      [=](leave_atom, caf::node_id& node, std::string& name) -> caf::result<uint32_t> {
        if (from_other_node(self))
          return make_error(pool_errc::invalid_input, "leave: through the gateway only");
        return on_leave(self, node, name);
      },
      [=](publish_atom_retry, uint16_t port, int attempt) {
        if (self->state.gateway && !self->state.draining)
          publish_gateway(self, port, false, attempt);
      },
      [=](done_atom, uint64_t did, matrix& result) {
        on_job_answer(self, did, &result, nullptr);
        check_ledger(self->state);
      },
      [=](fail_atom, uint64_t did, caf::error& err) {
        on_job_answer(self, did, nullptr, &err);
        check_ledger(self->state);
      },
      [=](pong_atom, uint64_t seq, worker_report report) {
        auto& s = self->state;
        auto i =
            s.slot_by_addr.find(caf::actor_cast<caf::actor_addr>(self->current_sender()));
        if (i == s.slot_by_addr.end())
          return;
        auto& slot = s.slots[i->second];
        if (!slot.ping_outstanding || seq != slot.ping_seq)
          return;
        slot.ping_outstanding = false;
        slot.last_pong = self->clock().now();
        slot.ever_ponged = true;
        slot.report = report;
        if (slot.missed_logged) {
          slot.missed_logged = false;
          info(self, log_event("heartbeat_recovered").add("worker", slot.id));
        }
      },
      [=](restart_atom, uint32_t slot_id, uint32_t generation) {
        auto& s = self->state;
        if (slot_id >= s.slots.size())
          return;
        auto& slot = s.slots[slot_id];
        if (slot.generation != generation || slot.state != slot_state::restarting ||
            s.draining)
          return;
        spawn_into(self, slot);
        ++slot.restarts;
        ++s.restarts_total;
        info(self, log_event("worker_restarted")
                       .add("worker", slot.id)
                       .add("restarts", slot.restarts));
        pump(self);
      },
      [=](tick_atom) {
        auto& s = self->state;
        auto t = self->clock().now();
        expire_deadlines(self, t);
        expire_lost_slots(self, t);
        heartbeat(self, t);
        overload_tick(self, t);
        autoscale(self, t);
        if (s.cfg.log.stats_interval.count() > 0 &&
            t - s.last_stats >= s.cfg.log.stats_interval) {
          s.last_stats = t;
          log_stats(self);
        }
        check_ledger(s);
        // The other models drain with the same timeout; their answers go
        // out through our gateway, so it outlives them (bounded by a grace).
        if (s.draining && t >= s.drain_deadline &&
            (s.other_models.empty() || t >= s.drain_deadline + other_models_grace)) {
          finish_drain(self);
          return;
        }
        maybe_finish_drain(self);
        self->delayed_send(self, tick, tick_atom::value);
      },
      [=](drain_atom) {
        auto& s = self->state;
        // Drain comes from the node's own signal handling only.
        if (s.draining || from_other_node(self) ||
            (s.cfg.drain_signal && !s.cfg.drain_signal->load()))
          return;
        s.draining = true;
        s.drain_deadline = self->clock().now() + s.cfg.pool.drain_timeout;
        for (auto& m : s.other_models)
          self->send(m.supervisor, drain_atom::value);
        info(self, log_event("drain_started")
                       .add("in_flight", static_cast<uint64_t>(s.requests.size()))
                       .add("timeout_ms", to_ms(s.cfg.pool.drain_timeout)));
        maybe_finish_drain(self);
      },
  };
}

}  // namespace

caf::actor spawn_supervisor(caf::actor_system& sys, supervisor_config cfg) {
  return sys.spawn(supervisor_behavior, std::move(cfg));
}

}  // namespace pool::detail
