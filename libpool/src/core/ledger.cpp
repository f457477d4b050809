#include "core/ledger.hpp"

#include <algorithm>

#include "defaults.hpp"
#include "pool/error.hpp"

namespace pool::detail::core {

namespace {

/// A worker's refusal of the input itself (a text over the model's limit):
/// answered at once, never retried, not the worker's fault.
bool is_input_error(const caf::error& err) {
  auto code = pool_code(err);
  return code && (*code == pool_errc::too_large || *code == pool_errc::invalid_input);
}

}  // namespace

ledger::ledger(const pool_section& pool, std::shared_ptr<byte_budget> bytes)
    : pool_(pool),
      bytes_(bytes ? std::move(bytes)
                   : std::make_shared<byte_budget>(pool.max_queued_bytes_mib << 20)) {}

admission ledger::admit(request&& r, slot_table& slots, time_point now) {
  if (!slots.any_live()) {
    refuse(r.charged, r.weight());
    return refused{make_error(pool_errc::unavailable, "no worker available")};
  }
  // Behind parked requests of its lane it parks too: a list waiting for
  // enough credits is not overtaken by single embeds for ever. Workers kept
  // for a waiting retry take none (slot_table::pick).
  auto* s = pending_[lane_index(r.ln)].empty()
                ? slots.pick(r.ln, slots.credits_for(r.ln, r.weight()))
                : nullptr;
  const bool reject = pool_.policy == overload_policy::reject;
  if (s == nullptr && (reject || pending() >= pool_.pending_capacity)) {
    auto began = note_shed(now);
    refuse(r.charged, r.weight());
    return refused{make_error(pool_errc::overloaded,
                              std::string{"no worker credit available ("} +
                                  (reject ? "policy reject" : "pending queue full") +
                                  "); retry after " +
                                  std::to_string(overload_retry_after_ms) + "ms"),
                   began};
  }
  auto id = next_request_id_++;
  auto& req = requests_[id];
  req = std::move(r);
  req.id = id;
  req.deadline = now + pool_.request_timeout;
  req.accepted_at = now;
  req.attempts = 0;
  req.dispatch_id = 0;
  counts_.accepted += req.weight();
  open_weight_ += req.weight();
  if (s != nullptr)
    return send(req, *s, slots, now);
  park(req, false);
  return parked{id};
}

void ledger::park(const request& req, bool retry) {
  (retry ? retries_ : pending_)[lane_index(req.ln)].push_back(req.id);
  pending_weight_ += req.weight();
}

void ledger::unpark(const request& req) {
  pending_weight_ -= std::min(pending_weight_, req.weight());
}

void ledger::refuse(uint64_t charged, uint64_t weight) {
  bytes_->give_back(charged);
  counts_.rejected += weight;
}

dispatch ledger::send(request& req, slot& s, slot_table& slots, time_point now) {
  const bool first = req.attempts == 0;
  auto credits = slots.credits_for(req.ln, req.weight());
  s.credits[lane_index(req.ln)] -= credits;
  uint64_t did = 0;
  while (did == 0 || jobs_.count(did) > 0)
    did = slots.random();
  s.jobs.insert(did);
  // A retry (sent only to an idle worker) is the only job its worker gets
  // until it is answered.
  s.isolating = !first;
  jobs_.emplace(did, held_job{s.id, req.id, req.ln, 0, credits});
  req.dispatch_id = did;
  ++req.attempts;
  auto left = std::max<int64_t>(
      1,
      std::chrono::duration_cast<std::chrono::nanoseconds>(req.deadline - now).count());
  return dispatch{
      req.id, s.id,
      job{did, static_cast<uint8_t>(req.ln), req.texts, req.task, req.attempts > 1, left},
      first, req.accepted_at};
}

const request* ledger::front_of(std::deque<uint64_t>& q) {
  while (!q.empty()) {
    auto it = requests_.find(q.front());
    if (it != requests_.end())
      return &it->second;
    q.pop_front();  // answered while parked (its deadline passed)
  }
  return nullptr;
}

size_t ledger::retries_waiting() const {
  size_t n = 0;
  for (auto& q : retries_)
    for (auto id : q)
      n += requests_.count(id);
  return n;
}

std::vector<dispatch> ledger::pump(slot_table& slots, time_point now) {
  std::vector<dispatch> out;
  // First the retries, each to a worker that holds nothing else; one worker
  // per retry still waiting then takes no new work until it runs dry; then
  // new work to the others.
  for (const bool retries : {true, false}) {
    if (!retries)
      slots.keep_for_retries(retries_waiting());
    for (auto ln : {lane::embed, lane::batch}) {
      auto& q = (retries ? retries_ : pending_)[lane_index(ln)];
      while (auto* req = front_of(q)) {
        auto* s = slots.pick(ln, slots.credits_for(ln, req->weight()), retries);
        if (s == nullptr)
          break;
        q.pop_front();
        unpark(*req);
        out.push_back(send(requests_.at(req->id), *s, slots, now));
      }
    }
  }
  return out;
}

std::optional<uint32_t> ledger::holder(uint64_t dispatch_id) const {
  auto j = jobs_.find(dispatch_id);
  if (j == jobs_.end())
    return std::nullopt;
  return j->second.slot;
}

job_outcome ledger::job_answered(uint64_t dispatch_id, bool ok, caf::error failure,
                                 slot_table& slots, time_point now) {
  auto j = jobs_.find(dispatch_id);
  auto& s = slots[j->second.slot];
  auto rid = j->second.request_id;
  s.credits[lane_index(j->second.ln)] += j->second.credits;
  s.jobs.erase(dispatch_id);
  forget_job(j);
  if (s.jobs.empty()) {
    s.idle_since = now;
    s.isolating = false;
  }
  job_outcome out;
  out.slot = s.id;
  auto it = requests_.find(rid);
  if (ok) {
    ++s.completed;
    if (it != requests_.end()) {
      counts_.completed += it->second.weight();
      out.done = take(it, true, caf::error{});
    }
    return out;
  }
  const bool input_error = is_input_error(failure);
  if (!input_error)
    ++s.failed;
  if (it == requests_.end())
    return out;
  auto& req = it->second;
  req.dispatch_id = 0;
  // Out of time, or the input refused by the worker itself: a retry cannot
  // help.
  const bool expired = pool_code(failure) == pool_errc::deadline_exceeded;
  if (expired || input_error || req.attempts >= pool_.max_attempts) {
    if (expired)
      counts_.expired += req.weight();
    else
      counts_.failed += req.weight();
    out.done = take(it, false, std::move(failure));
    return out;
  }
  out.retried = retry{rid, s.id, req.attempts, describe(failure), req.origin};
  park(req, true);
  return out;
}

requeued ledger::requeue(slot& s, const std::string& why) {
  requeued out;
  std::vector<uint64_t> again;
  for (auto did : s.jobs) {
    auto j = jobs_.find(did);
    if (j == jobs_.end())
      continue;
    auto rid = j->second.request_id;
    forget_job(j);
    auto it = requests_.find(rid);
    if (it == requests_.end())
      continue;  // already answered (deadline passed)
    auto& req = it->second;
    req.dispatch_id = 0;
    if (req.attempts >= pool_.max_attempts) {
      auto err = make_error(pool_errc::worker_failed, "request failed on " +
                                                          std::to_string(req.attempts) +
                                                          " worker(s); last: " + why);
      counts_.failed += req.weight();
      out.answers.push_back(take(it, false, std::move(err)));
    } else {
      again.push_back(rid);
    }
  }
  s.jobs.clear();
  s.isolating = false;
  // Oldest first.
  std::sort(again.begin(), again.end());
  for (auto rid : again) {
    auto& req = requests_[rid];
    out.retries.push_back(retry{rid, s.id, req.attempts, why, req.origin});
    park(req, true);
  }
  return out;
}

std::vector<answer> ledger::expire(time_point now) {
  std::vector<answer> out;
  auto expired_error = [&] {
    return make_error(pool_errc::deadline_exceeded,
                      "request not answered within pool.request-timeout (" +
                          std::to_string(to_ms(pool_.request_timeout)) + "ms)");
  };
  for (auto* q : parked_queues()) {
    for (auto i = q->begin(); i != q->end();) {
      auto it = requests_.find(*i);
      if (it == requests_.end()) {
        i = q->erase(i);
      } else if (it->second.deadline <= now) {
        counts_.expired += it->second.weight();
        unpark(it->second);
        out.push_back(take(it, false, expired_error()));
        i = q->erase(i);
      } else {
        ++i;
      }
    }
  }
  // Dispatched requests past their deadline are answered now; the worker's
  // result is dropped when it arrives, and only then is its credit returned.
  for (auto it = requests_.begin(); it != requests_.end();) {
    if (it->second.dispatch_id != 0 && it->second.deadline <= now) {
      counts_.expired += it->second.weight();
      out.push_back(take(it, false, expired_error()));
    } else {
      ++it;
    }
  }
  return out;
}

std::vector<answer> ledger::fail_pending(pool_errc code, const std::string& why) {
  std::vector<answer> out;
  for (auto* q : parked_queues()) {
    for (auto id : *q) {
      auto it = requests_.find(id);
      if (it == requests_.end())
        continue;
      counts_.failed += it->second.weight();
      unpark(it->second);
      out.push_back(take(it, false, make_error(code, why)));
    }
    q->clear();
  }
  return out;
}

std::vector<answer> ledger::finish() {
  std::vector<answer> out;
  for (auto it = requests_.begin(); it != requests_.end();) {
    counts_.failed += it->second.weight();
    out.push_back(take(it, false,
                       make_error(pool_errc::shutting_down,
                                  "node shut down before the request finished "
                                  "(pool.drain-timeout passed)")));
  }
  for (auto* q : parked_queues())
    q->clear();
  pending_weight_ = 0;
  for (auto j = jobs_.begin(); j != jobs_.end();)
    j = (bytes_->give_back(j->second.charged), jobs_.erase(j));
  return out;
}

bool ledger::note_shed(time_point now) {
  ++shed_unlogged_;
  ++shed_episode_;
  last_shed_ = now;
  if (overloaded_)
    return false;
  overloaded_ = true;
  last_shed_log_ = now;
  return true;
}

overload_report ledger::overload_tick(time_point now) {
  overload_report out;
  if (!overloaded_)
    return out;
  if (shed_unlogged_ > 0 && now - last_shed_log_ >= shed_log_interval) {
    out.shed = shed_unlogged_;
    out.window = now - last_shed_log_;
    shed_unlogged_ = 0;
    last_shed_log_ = now;
  }
  if (now - last_shed_ >= overload_quiet) {
    out.ended_total = shed_episode_;
    overloaded_ = false;
    shed_episode_ = 0;
    shed_unlogged_ = 0;
  }
  return out;
}

ledger_counters ledger::counters() const {
  auto l = counts_;
  l.in_flight = open_weight_;
  return l;
}

const request* ledger::find(uint64_t id) const {
  auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : &it->second;
}

answer ledger::take(request_map::iterator& it, bool completed, caf::error err) {
  auto& req = it->second;
  open_weight_ -= req.weight();
  auto j = req.dispatch_id != 0 ? jobs_.find(req.dispatch_id) : jobs_.end();
  if (j != jobs_.end())
    j->second.charged += req.charged;
  else
    bytes_->give_back(req.charged);
  answer out{std::move(req), completed, std::move(err)};
  it = requests_.erase(it);
  return out;
}

void ledger::forget_job(job_map::iterator j) {
  bytes_->give_back(j->second.charged);
  jobs_.erase(j);
}

}  // namespace pool::detail::core
