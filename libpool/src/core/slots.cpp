#include "core/slots.hpp"

#include <algorithm>
#include <iterator>

#include "pool/error.hpp"

namespace pool::detail::core {

slot_table::slot_table(const pool_section& pool, const heartbeat_section& heartbeat,
                       std::shared_ptr<memory_budget> budget, uint64_t worker_bytes,
                       uint64_t weights_bytes, uint64_t seed)
    : embed_capacity_(pool.embed_queue_capacity),
      batch_capacity_(pool.batch_queue_capacity),
      heartbeat_interval_(heartbeat.interval),
      heartbeat_timeout_(heartbeat.timeout),
      restart_backoff_(pool.restart_backoff),
      restart_backoff_max_(pool.restart_backoff_max),
      max_restarts_(pool.max_restarts),
      restart_window_(pool.restart_window),
      max_abandoned_(pool.max_abandoned),
      budget_(budget ? std::move(budget) : std::make_shared<memory_budget>(0)),
      worker_bytes_(worker_bytes),
      weights_bytes_(weights_bytes),
      ids_(seed) {
  budget_->reserve(weights_bytes_);
}

slot_table::~slot_table() {
  budget_->release(weights_bytes_ + reserved_bytes_);
}

slot* slot_table::add_local(bool force) {
  slot fresh;
  fresh.id = static_cast<uint32_t>(slots_.size());
  if (!reserve(fresh, force))
    return nullptr;
  slots_.push_back(std::move(fresh));
  return &slots_.back();
}

uint32_t slot_table::credits_for(lane ln, uint64_t weight) const {
  auto capacity = ln == lane::embed ? embed_capacity_ : batch_capacity_;
  return static_cast<uint32_t>(
      std::max<uint64_t>(1, std::min<uint64_t>(weight, std::max<uint32_t>(capacity, 1))));
}

slot* slot_table::pick(lane ln, uint32_t need, bool idle) {
  slot* best = nullptr;
  auto n = slots_.size();
  auto li = lane_index(ln);
  need = std::max<uint32_t>(need, 1);
  for (size_t k = 0; k < n; ++k) {
    auto& s = slots_[(rr_cursor_ + k) % n];
    if (s.state != worker_state::ready || s.credits[li] < need || s.isolating ||
        (idle ? !s.jobs.empty() : s.kept_for_retry))
      continue;
    if (best == nullptr || s.credits[li] > best->credits[li] ||
        (s.credits[li] == best->credits[li] &&
         s.report.queue_depth < best->report.queue_depth))
      best = &s;
  }
  if (best != nullptr)
    rr_cursor_ = (best->id + 1) % static_cast<uint32_t>(n);
  return best;
}

void slot_table::keep_for_retries(size_t n) {
  if (n == 0 && kept_ == 0)
    return;
  std::vector<slot*> candidates;
  for (auto& s : slots_)
    if (s.state == worker_state::ready && !s.isolating)
      candidates.push_back(&s);
  n = std::min(n, candidates.size());
  // Fewest jobs first; on a tie a worker kept already stays kept, so that
  // the choice does not move between workers that each keep taking work.
  std::partial_sort(candidates.begin(), candidates.begin() + static_cast<ptrdiff_t>(n),
                    candidates.end(), [](const slot* a, const slot* b) {
                      if (a->jobs.size() != b->jobs.size())
                        return a->jobs.size() < b->jobs.size();
                      if (a->kept_for_retry != b->kept_for_retry)
                        return a->kept_for_retry;
                      return a->id < b->id;
                    });
  for (auto& s : slots_)
    s.kept_for_retry = false;
  for (size_t i = 0; i < n; ++i)
    candidates[i]->kept_for_retry = true;
  kept_ = n;
}

bool slot_table::any_live() const {
  return std::any_of(slots_.begin(), slots_.end(),
                     [](const slot& s) { return s.live(); });
}

uint32_t slot_table::live_local() const {
  return static_cast<uint32_t>(std::count_if(
      slots_.begin(), slots_.end(), [](const slot& s) { return !s.remote && s.live(); }));
}

uint32_t slot_table::ready() const {
  return static_cast<uint32_t>(
      std::count_if(slots_.begin(), slots_.end(),
                    [](const slot& s) { return s.state == worker_state::ready; }));
}

uint64_t slot_table::credits_in_use() const {
  uint64_t n = 0;
  for (auto& s : slots_)
    if (s.state == worker_state::ready)
      n += (embed_capacity_ - s.credits[0]) + (batch_capacity_ - s.credits[1]);
  return n;
}

void slot_table::attach(slot& s, time_point now) {
  s.attached = true;
  s.credits[0] = embed_capacity_;
  s.credits[1] = batch_capacity_;
  s.isolating = false;  // a new worker holds no retry
  s.kept_for_retry = false;
  s.state = worker_state::ready;
  s.ping_outstanding = false;
  s.missed_logged = false;
  s.ever_ponged = false;
  s.report = worker_report{};
  s.last_pong = now;
  s.ping_sent = now - heartbeat_interval_;  // ping at the next tick
}

void slot_table::started(slot& s, time_point now) {
  attach(s, now);
  s.idle_since = now;
  ++spawned_;
}

void slot_table::restarted(slot& s, time_point now) {
  started(s, now);
  ++s.restarts;
  ++restarts_total_;
}

restart_decision slot_table::schedule_restart(slot& s, time_point now) {
  while (!s.restart_times.empty() && now - s.restart_times.front() > restart_window_)
    s.restart_times.pop_front();
  if (s.restart_times.size() >= max_restarts_)
    return give_up_slot(s, "restart intensity exceeded");
  s.restart_times.push_back(now);
  auto exponent = std::min<size_t>(s.restart_times.size() - 1, 20);
  auto backoff = restart_backoff_ * (int64_t{1} << exponent);
  backoff = std::min(backoff, restart_backoff_max_);
  s.state = worker_state::restarting;
  ++s.generation;
  return restart{backoff, s.generation, static_cast<uint64_t>(s.restart_times.size())};
}

bool slot_table::restart_due(uint32_t id, uint32_t generation, bool draining) const {
  return id < slots_.size() && slots_[id].generation == generation &&
         slots_[id].state == worker_state::restarting && !draining;
}

give_up slot_table::give_up_slot(slot& s, const char* reason) {
  s.state = worker_state::given_up;
  release(s);
  ++given_up_;
  return give_up{reason};
}

void slot_table::lose(slot& s, time_point now) {
  s.state = s.state == worker_state::leaving ? worker_state::left : worker_state::lost;
  s.lost_since = now;
}

heartbeat_verdict slot_table::heartbeat(slot& s, time_point now) {
  if (s.state != worker_state::ready && s.state != worker_state::leaving)
    return {};
  if (s.ping_outstanding) {
    auto silent = now - s.ping_sent;
    if (silent > heartbeat_timeout_)
      return worker_stuck{silent};
    if (silent > heartbeat_interval_ && !s.missed_logged) {
      s.missed_logged = true;
      return heartbeat_missed{silent};
    }
    return {};
  }
  if (now - s.ping_sent < heartbeat_interval_)
    return {};
  s.ping_outstanding = true;
  s.ping_seq = ids_();
  s.ping_sent = now;
  return send_ping{s.ping_seq};
}

pong_result slot_table::pong(slot& s, uint64_t seq, const worker_report& report,
                             time_point now) {
  if (!s.ping_outstanding || seq != s.ping_seq)
    return pong_result::ignored;
  s.ping_outstanding = false;
  s.last_pong = now;
  s.ever_ponged = true;
  s.report = report;
  if (!s.missed_logged)
    return pong_result::taken;
  s.missed_logged = false;
  return pong_result::recovered;
}

stuck_fate slot_table::stuck(slot& s, time_point now, bool draining) {
  s.attached = false;
  if (s.remote) {
    // A silent remote worker (or a frozen node): its node replaces it if it
    // is alive; here it only stops receiving work.
    s.lost_since = now;
    s.state = worker_state::lost;
    return stuck_fate::lost;
  }
  ++abandoned_;
  s.state = worker_state::stuck;
  if (abandoned_ > max_abandoned_) {
    give_up_slot(s, "pool.max-abandoned reached");
    return stuck_fate::give_up;
  }
  if (draining) {
    s.state = worker_state::stopped;
    return stuck_fate::stopped;
  }
  return stuck_fate::replace;
}

void slot_table::evict(slot& s) {
  s.attached = false;
  s.state = worker_state::evicted;
  s.credits[0] = s.credits[1] = 0;
  s.ping_outstanding = false;
  release(s);
  ++evicted_;
}

void slot_table::stop_all() {
  for (auto& s : slots_) {
    release(s);
    s.attached = false;
    s.state = worker_state::stopped;
  }
}

bool slot_table::reserve(slot& s, bool force) {
  if (s.reserved)
    return true;
  if (force)
    budget_->reserve(worker_bytes_);
  else if (!budget_->try_reserve(worker_bytes_))
    return false;
  reserved_bytes_ += worker_bytes_;
  s.reserved = true;
  return true;
}

void slot_table::release(slot& s) {
  if (!s.reserved)
    return;
  budget_->release(worker_bytes_);
  reserved_bytes_ -= worker_bytes_;
  s.reserved = false;
}

budget_refusal slot_table::refusal() const {
  return budget_refusal{worker_bytes_, budget_->used(), budget_->limit(), live_local()};
}

uint32_t slot_table::live_slots_of(const caf::node_id& node) const {
  return static_cast<uint32_t>(
      std::count_if(slots_.begin(), slots_.end(), [&](const slot& s) {
        return s.remote && s.node_id == node &&
               (s.state == worker_state::ready || s.state == worker_state::leaving);
      }));
}

caf::error slot_table::check_join_name(const caf::node_id& node,
                                       const std::string& name) const {
  if (name.empty() || name == "local" || name.size() > 128)
    return make_error(pool_errc::invalid_input,
                      "join: a worker node needs a name of 1 to 128 bytes other than "
                      "\"local\"");
  for (auto& s : slots_)
    if (s.remote && s.node == name && s.node_id != node &&
        (s.state == worker_state::ready || s.state == worker_state::leaving))
      return make_error(pool_errc::invalid_input,
                        "join: the name \"" + name + "\" is held by another live node");
  return {};
}

caf::expected<std::vector<uint32_t>> slot_table::plan_join(const caf::node_id& node,
                                                           const std::string& name,
                                                           size_t count,
                                                           uint32_t max_per_node) {
  auto held = live_slots_of(node);
  if (held + count > max_per_node)
    return make_error(
        pool_errc::too_large,
        "join: node \"" + name + "\" would lend " + std::to_string(held + count) +
            " workers; cluster.max-workers-per-node is " + std::to_string(max_per_node));
  // Reusable slots first (lost or left ones of this name, e.g. a worker node
  // that restarted, and freed ones), new slots for the rest, within the
  // table's bound.
  std::vector<uint32_t> ids;
  for (size_t i = 0; i < slots_.size() && ids.size() < count; ++i) {
    auto& s = slots_[i];
    if (s.remote && !s.attached &&
        ((s.node == name &&
          (s.state == worker_state::lost || s.state == worker_state::left)) ||
         s.state == worker_state::freed))
      ids.push_back(static_cast<uint32_t>(i));
  }
  if (slots_.size() + (count - ids.size()) > max_slots)
    return make_error(pool_errc::too_large, "join: supervisor holds too many workers");
  while (ids.size() < count) {
    slots_.emplace_back();
    slots_.back().id = static_cast<uint32_t>(slots_.size() - 1);
    slots_.back().remote = true;
    ids.push_back(slots_.back().id);
  }
  for (auto id : ids) {
    auto& s = slots_[id];
    s.node = name;
    s.node_id = node;
    s.completed = s.failed = 0;
  }
  return ids;
}

bool slot_table::leave(const caf::node_id& node, const std::string& name) {
  bool known = false;
  for (auto& s : slots_) {
    if (!s.remote || s.node_id != node || s.node != name ||
        s.state == worker_state::freed)
      continue;
    known = true;
    if (s.state == worker_state::ready)
      s.state = worker_state::leaving;
  }
  return known;
}

bool slot_table::leaving_busy(const std::string& name) const {
  return std::any_of(slots_.begin(), slots_.end(), [&](const slot& s) {
    return s.remote && s.node == name && s.state == worker_state::leaving &&
           !s.jobs.empty();
  });
}

std::vector<uint32_t> slot_table::mark_left(const std::string& name) {
  std::vector<uint32_t> left;
  for (auto& s : slots_) {
    if (s.remote && s.node == name && s.state == worker_state::leaving) {
      s.attached = false;
      s.state = worker_state::left;
      left.push_back(s.id);
    }
  }
  return left;
}

std::vector<slot_freed> slot_table::expire_lost(time_point now, caf::timespan expiry) {
  std::vector<slot_freed> freed;
  for (auto& s : slots_) {
    if (!s.remote || s.state != worker_state::lost || now - s.lost_since < expiry)
      continue;
    freed.push_back(slot_freed{s.id, s.node, now - s.lost_since});
    s.state = worker_state::freed;
    s.node.clear();
    s.node_id = caf::node_id{};
  }
  return freed;
}

}  // namespace pool::detail::core
