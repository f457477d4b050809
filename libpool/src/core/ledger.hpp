// A model's request ledger, without an actor: admission (dispatch, park or
// shed), the pending queues, the jobs workers hold, deadlines, retries, the
// bytes each request holds of the node's byte budget, and the counts whose
// invariant is `balanced()`. Every function returns what the supervisor must
// do as values — jobs to send (`dispatch`), requests to answer (`answer`),
// retries to log — in the order it must do it.
//
// Every request leaves the ledger through exactly one `answer`: the
// supervisor sends it to whoever it keeps as the request's reply address
// (keyed by `request::id`) and forgets that then.
//
// Not thread-safe: one supervisor owns a ledger.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include <caf/error.hpp>

#include "core/slots.hpp"
#include "core/time.hpp"
#include "memory_budget.hpp"
#include "pool/config.hpp"
#include "pool/protocol.hpp"
#include "request_origin.hpp"

namespace pool::detail::core {

/// How many requests one counts as in the ledger's counters, credits, the
/// parked bound, the queue depth and the reply metrics: an embed-lane request
/// of n texts is n embeds (a list of embeds, pool/protocol.hpp), a batch is
/// one request.
inline uint64_t request_weight(lane ln, size_t texts) {
  return ln == lane::embed && texts > 0 ? texts : 1;
}

/// An accepted request (or one being admitted).
struct request {
  request() = default;
  /// A request to admit.
  request(lane l, shared_texts xs, std::string t, uint64_t ticket_no, uint64_t bytes,
          request_origin from)
      : ln(l),
        texts(std::move(xs)),
        task(std::move(t)),
        ticket(ticket_no),
        charged(bytes),
        origin(std::move(from)) {}

  uint64_t id = 0;  // the ledger's; 0 until accepted
  lane ln = lane::embed;
  shared_texts texts;  // shared with the job a local worker holds
  std::string task;
  uint64_t ticket = 0;  // the submitter's; its answer names it
  time_point deadline;
  time_point accepted_at;
  uint32_t attempts = 0;     // dispatches so far
  uint64_t dispatch_id = 0;  // 0 while pending
  uint64_t charged = 0;      // bytes of the node's byte_budget it holds
  request_origin origin;     // its id and sender, for the log lines about it

  /// See `request_weight`.
  uint64_t weight() const { return request_weight(ln, texts.size()); }
};

/// Send `job` to the worker in `slot` (a credit of its lane is spent).
struct dispatch {
  uint64_t request = 0;
  uint32_t slot = 0;
  pool::job job;
  /// Its first dispatch: it waited in the pool since `accepted_at`.
  bool first = false;
  time_point accepted_at;
};

/// Answer `req` (it has left the ledger, counted as completed, failed or
/// expired).
struct answer {
  request req;
  /// With the result the worker sent (the supervisor holds it).
  bool completed = false;
  /// Otherwise: the error to answer with.
  caf::error error;
};

/// A request is parked again, among its lane's retries (dispatched before new
/// work), after its worker failed, died or got stuck.
struct retry {
  uint64_t request = 0;
  uint32_t worker = 0;  // the slot that failed it
  uint32_t attempts = 0;
  std::string reason;
  request_origin origin;
};

/// The request was parked in its lane's pending queue (policy wait).
struct parked {
  uint64_t request = 0;
};

/// The request was refused, not accepted (counted as rejected, its bytes
/// given back).
struct refused {
  caf::error error;
  /// It was shed for want of credit and began an overload episode.
  bool overload_began = false;
};

using admission = std::variant<dispatch, parked, refused>;

/// What taking back a dead or stuck worker's jobs did: answers (requests
/// that had their pool.max-attempts) first, then retries, oldest first.
struct requeued {
  std::vector<answer> answers;
  std::vector<retry> retries;
};

/// What a worker's answer to a job did.
struct job_outcome {
  uint32_t slot = 0;  // the worker's slot (its credit is back)
  /// The request's answer; none if it was answered already (deadline) or is
  /// retried.
  std::optional<answer> done;
  std::optional<retry> retried;
};

/// What an overload tick reports.
struct overload_report {
  /// `shed` requests were shed in the last `window` (at most one report a
  /// second during an episode).
  std::optional<uint64_t> shed;
  caf::timespan window{0};
  /// The episode ended (no shedding for a second): this many shed in all.
  std::optional<uint64_t> ended_total;
};

class ledger {
 public:
  /// `bytes` is the node's byte budget (null = one of its own from
  /// pool.max-queued-bytes).
  ledger(const pool_section& pool, std::shared_ptr<byte_budget> bytes);

  /// Admits a request whose lane, texts, task, ticket, charged bytes and
  /// origin are set: without a live worker it is refused `unavailable`;
  /// without credit it is parked (policy wait, room in the queue) or shed
  /// `overloaded`; otherwise it is dispatched to the least-loaded worker.
  /// `r` is moved from only when it was accepted.
  admission admit(request&& r, slot_table& slots, time_point now);
  /// A request refused before admission (e.g. while draining): counted as
  /// `weight` rejected requests and its bytes given back.
  void refuse(uint64_t charged, uint64_t weight);

  /// Dispatches parked requests, oldest first, while workers have credit. A
  /// retried request goes only to a worker that holds no job, which then gets
  /// nothing else until it answers (`slot::isolating`); for each retry that
  /// still waits for such a worker, the ready worker with the fewest jobs
  /// takes no new work until it runs dry (`slot::kept_for_retry`), and the
  /// others go on taking new work.
  std::vector<dispatch> pump(slot_table& slots, time_point now);

  /// The slot whose worker holds the job `dispatch_id`, if any.
  std::optional<uint32_t> holder(uint64_t dispatch_id) const;
  /// The worker holding `dispatch_id` answered (`ok`, or failed with
  /// `failure`): its credit comes back; a result answers the request; a
  /// failure is retried unless the deadline passed, the input was refused,
  /// or it had pool.max-attempts. Call only for a job `holder` knows.
  job_outcome job_answered(uint64_t dispatch_id, bool ok, caf::error failure,
                           slot_table& slots, time_point now);
  /// Takes every job away from a worker that died or got stuck: each request
  /// is retried (embedding is a pure function) until it was tried
  /// pool.max-attempts times, then answered `worker_failed`.
  requeued requeue(slot& s, const std::string& why);
  /// Answers every request past its deadline `deadline_exceeded`: parked
  /// ones, and dispatched ones at once (the worker's credit comes back when
  /// it answers).
  std::vector<answer> expire(time_point now);
  /// Answers every parked request with `code` and `why` (counted as failed).
  std::vector<answer> fail_pending(pool_errc code, const std::string& why);
  /// The end of a drain: every request is answered `shutting_down` and every
  /// job forgotten.
  std::vector<answer> finish();

  /// Ends the overload episode's quiet second, and reports the requests shed
  /// at most once a second while it lasts.
  overload_report overload_tick(time_point now);

  /// The counts, `in_flight` = accepted requests not answered yet; every
  /// count in requests by weight (`request::weight`).
  ledger_counters counters() const;
  /// accepted == completed + failed + expired + in_flight.
  bool balanced() const { return pool::balanced(counters()); }
  size_t in_flight() const { return requests_.size(); }
  /// The weight of the requests not answered yet (`counters().in_flight`).
  uint64_t open_weight() const { return open_weight_; }
  /// The weight of the parked requests (bounded by pool.pending-capacity).
  uint64_t pending() const { return pending_weight_; }
  size_t jobs() const { return jobs_.size(); }
  const request* find(uint64_t id) const;
  const byte_budget& bytes() const { return *bytes_; }

 private:
  using request_map = std::unordered_map<uint64_t, request>;
  struct held_job {
    uint32_t slot = 0;
    uint64_t request_id = 0;
    lane ln = lane::embed;
    /// Bytes of a request answered (expired) while its worker still holds
    /// the job: given back when the worker answers or dies.
    uint64_t charged = 0;
    uint32_t credits = 1;  // what it took of its lane (slot_table::credits_for)
  };
  using job_map = std::unordered_map<uint64_t, held_job>;

  /// Counts a shed request; true if it began an overload episode.
  bool note_shed(time_point now);

  dispatch send(request& req, slot& s, slot_table& slots, time_point now);
  /// The oldest request of parked queue `q` still unanswered (dropping
  /// answered ones from its front), or null.
  const request* front_of(std::deque<uint64_t>& q);
  /// Retried requests waiting for an idle worker (see `pump`).
  size_t retries_waiting() const;
  /// The four queues of parked requests: new work and retries, per lane.
  std::array<std::deque<uint64_t>*, 4> parked_queues() {
    return {&pending_[0], &pending_[1], &retries_[0], &retries_[1]};
  }
  /// Takes `*it` out to be answered and moves `it` to the next request; its
  /// bytes go back to the budget, or to the job a worker still holds until
  /// the worker is done.
  answer take(request_map::iterator& it, bool completed, caf::error err);
  /// Forgets a job once its worker answered or is gone (and the bytes it
  /// holds).
  void forget_job(job_map::iterator j);

  pool_section pool_;
  std::shared_ptr<byte_budget> bytes_;  // never null
  request_map requests_;                // accepted, unanswered
  job_map jobs_;                        // by dispatch id
  std::deque<uint64_t> pending_[2];     // new requests waiting for credit, per lane
  std::deque<uint64_t> retries_[2];     // retried requests waiting for an idle worker
  uint64_t next_request_id_ = 1;
  ledger_counters counts_;       // in_flight unused: open_weight_
  uint64_t open_weight_ = 0;     // of the requests in requests_
  uint64_t pending_weight_ = 0;  // of the requests in pending_ and retries_
  /// Parks `req` at the back of its lane's new work, or with `retry` of its
  /// lane's retries.
  void park(const request& req, bool retry);
  /// Takes `req`'s weight off the parked total (it left pending_ or retries_).
  void unpark(const request& req);
  // The overload episode: it begins with the first shed request and ends
  // after a quiet second.
  bool overloaded_ = false;
  uint64_t shed_unlogged_ = 0;
  uint64_t shed_episode_ = 0;
  time_point last_shed_;
  time_point last_shed_log_;
};

}  // namespace pool::detail::core
