#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <string_view>
#include <thread>
#include <vector>

#include <caf/all.hpp>

#include "actors.hpp"
#include "defaults.hpp"
#include "guarded_actor.hpp"
#include "logging.hpp"
#include "metrics.hpp"

namespace pool::detail {

/// One chunk of texts and what embedding it gave. Owned by its worker's
/// state and reused from chunk to chunk; while the worker's compute thread
/// embeds it, only that thread touches it, and the worker waits for it back.
struct chunk_work {
  /// The texts' storage, held for the compute thread: the worker may end
  /// (and drop its jobs) while the thread still reads them.
  std::vector<shared_texts> keep;
  std::vector<std::string_view> texts;
  size_t text_bytes = 0;  // of all `texts`
  std::string task;
  bool hang = false;  // holds the fault.hang-marker
  std::vector<float> out;
  embed_report report;
  caf::error failure;
  std::chrono::nanoseconds took{0};
  bool hung = false;  // the hang drill ran and was released
  /// Set by whichever comes first: the compute thread starting the chunk, or
  /// the worker withdrawing it (an embed arrived behind it).
  std::atomic<int> stage{0};
  static constexpr int waiting = 0, started = 1, withdrawn = 2;
  /// Whose texts the chunk holds, in order: `take` texts of job `job` in
  /// `lane`. A job answered meanwhile (a failed earlier chunk) no longer
  /// heads its queue, and its rows are skipped.
  struct part {
    uint8_t lane;
    uint64_t job;
    size_t take;
  };
  std::vector<part> parts;
};

/// A chunk on its way to and from a worker's compute thread (local only).
struct chunk_handle {
  std::shared_ptr<chunk_work> ptr;
};

}  // namespace pool::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(pool::detail::chunk_handle)

namespace pool::detail {

namespace {

std::atomic<bool> hung_workers_released{false};

using steady_time = std::chrono::steady_clock::time_point;

struct queued_job {
  job work;
  caf::actor reply_to;
  matrix result;
  size_t next = 0;     // index of the next text whose row is missing
  size_t sent = 0;     // texts handed to a chunk (>= next)
  caf::error refused;  // the first text the embedder refused, if any
  steady_time deadline = steady_time::max();
};

struct worker_actor_state {
  static inline const char* name = "embedpool.worker";

  /// Jobs held, by lane: embed work goes before further batch chunks, so a
  /// single text waits behind at most one chunk of a batch.
  std::deque<queued_job> queues[2];
  bool run_scheduled = false;
  uint64_t received = 0;
  uint64_t completed = 0;
  uint64_t failed = 0;
  /// Chunks on the compute thread, oldest first: at most `max_chunks_away`
  /// (one computing, the next already waiting, so the thread never idles
  /// between them). While any is away, pings wait in `deferred_pings` until
  /// one comes back: a hung call goes unanswered, as it would on the
  /// worker's own thread.
  std::deque<std::shared_ptr<chunk_work>> away;
  std::vector<std::shared_ptr<chunk_work>> spare;  // chunks to reuse
  std::vector<std::pair<caf::actor, uint64_t>> deferred_pings;
  /// The worker's compute thread (a detached actor), spawned for the first
  /// chunk that does not run inline.
  caf::actor compute;
  /// Estimated nanoseconds one text takes, from the chunks embedded so far:
  /// rises at once to a slower chunk's, falls by a quarter of the difference
  /// after a faster one. Zero = nothing measured yet.
  double text_ns = 0;
  std::shared_ptr<spdlog::logger> log = get_logger("worker");
};

/// A worker: counts the work messages that enter its mailbox, so that a pong
/// can report them without looking into the mailbox.
///
/// CAF 0.17's `mailbox().size()` first moves newly arrived messages into the
/// mailbox's queues (fifo_inbox::fetch_more), and `task_queue::lifo_append`
/// downcasts the empty queue's sentinel node to a `mailbox_element`: undefined
/// behavior, which UBSan (-fsanitize=vptr) reports and, with the sanitizer
/// build's -fno-sanitize-recover, ends the process on. A busy worker node
/// answering a ping while work arrived died that way, silently (issue #10).
/// The actor's own loop runs the same code inside libcaf_core, which is not
/// instrumented; only a call compiled in this project reaches UBSan.
class worker_actor : public caf::stateful_actor<worker_actor_state> {
 public:
  using super = caf::stateful_actor<worker_actor_state>;

  explicit worker_actor(caf::actor_config& cfg) : super(cfg) {}

  void enqueue(caf::mailbox_element_ptr what, caf::execution_unit* host) override {
    if (what && !what->mid.is_response() &&
        what->content().match_elements<work_atom, job>())
      work_in_mailbox_.fetch_add(1, std::memory_order_relaxed);
    super::enqueue(std::move(what), host);
  }

  /// Work messages in the mailbox, not yet taken by the work handler.
  uint64_t work_in_mailbox() const {
    return work_in_mailbox_.load(std::memory_order_relaxed);
  }

  /// The work handler took one work message out of the mailbox.
  void took_work() { work_in_mailbox_.fetch_sub(1, std::memory_order_relaxed); }

 private:
  // A member, not part of `state`: senders reach `enqueue` also after the
  // actor ended and destroyed its state.
  std::atomic<uint64_t> work_in_mailbox_{0};
};

size_t held_jobs(const worker_actor_state& st) {
  return st.queues[0].size() + st.queues[1].size();
}

constexpr size_t max_chunks_away = 2;
/// Most text a chunk embedded inline may hold: the time estimate is per
/// text, and one long text among short ones must not hold a scheduler
/// thread.
constexpr size_t max_inline_bytes = 4096;

/// The first job with texts not yet handed to a chunk, embed work first;
/// null if none.
const queued_job* first_unsent(const worker_actor_state& st) {
  for (auto& queue : st.queues)
    for (auto& q : queue)
      if (q.sent < q.work.texts.size())
        return &q;
  return nullptr;
}

/// Answers `deadline_exceeded` for every held job whose time ran out: nothing
/// is computed for a caller that has gone.
void drop_expired(worker_actor* self) {
  auto now = std::chrono::steady_clock::now();
  for (auto& q : self->state.queues) {
    for (auto i = q.begin(); i != q.end();) {
      if (i->deadline > now || i->sent > i->next) {  // in a chunk away: kept
        ++i;
        continue;
      }
      ++self->state.failed;
      self->send(i->reply_to, fail_atom::value, i->work.id,
                 make_error(pool_errc::deadline_exceeded,
                            "the request's deadline passed while the job was queued "
                            "at its worker"));
      i = q.erase(i);
    }
  }
}

/// Jobs held and not answered: the local queue plus work still in the mailbox.
uint64_t queue_depth(worker_actor* self) {
  return held_jobs(self->state) + self->work_in_mailbox();
}

void hang_until_released() {
  auto start = std::chrono::steady_clock::now();
  while (!hung_workers_released.load() &&
         std::chrono::steady_clock::now() - start < max_hang)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

/// Adds the token counts of rows [row, row + take) of the chunk to `q`'s
/// result and keeps the first refusal (renumbered to the job's text index).
void note_report(queued_job& q, const embed_report& report, size_t row, size_t take,
                 uint64_t chunk_us) {
  if (!report.tokens.empty())
    q.result.compute_us += chunk_us * take / report.tokens.size();
  for (size_t k = 0; k < take && row + k < report.tokens.size(); ++k) {
    q.result.tokens += report.tokens[row + k];
    if (!q.refused && row + k < report.refused.size() && report.refused[row + k]) {
      const auto index = q.next + k;
      auto msg = error_message(report.refused[row + k]);
      if (auto pos = msg.find("text "); pos == 0)
        msg = msg.substr(msg.find(' ', 5));
      q.refused = make_error(static_cast<pool_errc>(report.refused[row + k].code()),
                             "text " + std::to_string(index) + msg);
    }
  }
}

/// Texts the next chunk may hold: `micro_batch_texts`, and no more than the
/// estimate says fit in `chunk_time_budget`, so that the pings that arrive
/// meanwhile are answered within heartbeat.interval. Before anything is
/// measured a chunk holds one text: its time is the first estimate.
size_t chunk_text_budget(const worker_actor_state& st, const worker_config& cfg) {
  const size_t most = std::max<size_t>(1, cfg.micro_batch_texts);
  if (cfg.chunk_time_budget.count() <= 0)
    return most;
  if (st.text_ns <= 0)
    return 1;
  const auto fit = static_cast<double>(cfg.chunk_time_budget.count()) / st.text_ns;
  if (fit >= static_cast<double>(most))
    return most;
  return std::max<size_t>(1, static_cast<size_t>(fit));
}

/// Folds the time a chunk of `texts` texts took into the per-text estimate.
void note_chunk_time(worker_actor_state& st, std::chrono::nanoseconds took,
                     size_t texts) {
  if (texts == 0)
    return;
  const auto per_text = static_cast<double>(took.count()) / static_cast<double>(texts);
  if (per_text >= st.text_ns)
    st.text_ns = per_text;
  else
    st.text_ns += (per_text - st.text_ns) / 4;
}

void schedule_run(worker_actor* self) {
  auto& st = self->state;
  if (!st.run_scheduled && st.away.size() < max_chunks_away && first_unsent(st)) {
    self->state.run_scheduled = true;
    self->send(self, run_atom::value);
  }
}

/// Embeds `c` on the calling thread: the hang drill, the embedder call and
/// fault.compute-delay, timed.
void compute_chunk(const worker_config& cfg, chunk_work& c) {
  c.failure = caf::none;
  if (c.hang) {
    log_event("worker_hang_drill")
        .add("worker", cfg.slot)
        .write(*get_logger("worker"), spdlog::level::warn);
    hang_until_released();
    c.hung = true;
    c.failure = make_error(pool_errc::worker_failed, "fault drill: hang released");
    return;
  }
  c.out.resize(c.texts.size() * cfg.model->dim());
  auto started = std::chrono::steady_clock::now();
  try {
    cfg.model->embed_counted(c.texts, c.task, c.out.data(), c.report);
  } catch (const std::exception& ex) {
    c.failure = make_error(pool_errc::worker_failed,
                           std::string{"embedder failed: "} + ex.what());
  }
  if (cfg.fault.compute_delay.count() > 0)
    std::this_thread::sleep_for(cfg.fault.compute_delay * c.texts.size());
  c.took = std::chrono::steady_clock::now() - started;
}

/// A worker's compute thread: embeds the chunks its worker sends and hands
/// them back; ends with its worker.
caf::behavior compute_behavior(caf::event_based_actor* self, caf::actor worker,
                               worker_config cfg) {
  self->monitor(worker);
  self->set_down_handler([self](caf::down_msg&) { self->quit(); });
  return {
      [cfg = std::move(cfg)](compute_atom, chunk_handle& h) {
        int expected = chunk_work::waiting;
        if (h.ptr->stage.compare_exchange_strong(expected, chunk_work::started))
          compute_chunk(cfg, *h.ptr);
        return std::move(h);
      },
  };
}

void answer_ping(worker_actor* self, const caf::actor& reply_to, uint64_t seq) {
  auto& st = self->state;
  worker_report report{queue_depth(self), st.completed, st.failed};
  self->send<caf::message_priority::high>(reply_to, pong_atom::value, seq, report);
}

/// Takes a computed chunk back: records its time, hands out its rows job by
/// job, answers every job that is complete, then the pings that waited.
void finish_chunk(worker_actor* self, const worker_config& cfg, chunk_work& c) {
  auto& st = self->state;
  c.keep.clear();
  if (c.hung) {
    self->quit(c.failure);
    return;
  }
  auto dim = cfg.model->dim();
  note_chunk_time(st, c.took, c.texts.size());
  const auto chunk_us = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(c.took).count());
  if (cfg.metrics) {
    cfg.metrics->compute.observe(chunk_us);
    cfg.metrics->batch_texts.observe(c.texts.size());
    uint64_t tokens = 0;
    for (auto t : c.report.tokens) {
      tokens += t;
      cfg.metrics->input_tokens.observe(t);
    }
    cfg.metrics->batch_tokens.observe(tokens);
  }
  size_t row = 0;
  for (auto& part : c.parts) {
    auto& queue = st.queues[part.lane];
    if (queue.empty() || queue.front().work.id != part.job) {
      row += part.take;  // answered already
      continue;
    }
    auto& q = queue.front();
    auto take = part.take;
    if (!c.failure) {
      note_report(q, c.report, row, take, chunk_us);
      if (q.result.values.empty())
        q.result.values.resize(q.work.texts.size() * dim);
      std::copy(c.out.begin() + static_cast<std::ptrdiff_t>(row * dim),
                c.out.begin() + static_cast<std::ptrdiff_t>((row + take) * dim),
                q.result.values.begin() + static_cast<std::ptrdiff_t>(q.next * dim));
    }
    q.next += take;
    row += take;
    if (c.failure) {
      ++st.failed;
      self->send(q.reply_to, fail_atom::value, q.work.id, c.failure);
      queue.pop_front();
    } else if (q.next == q.work.texts.size() && q.refused) {
      // An input error, not a worker failure: the supervisor answers it as is.
      ++st.completed;
      self->send(q.reply_to, fail_atom::value, q.work.id, std::move(q.refused));
      queue.pop_front();
    } else if (q.next == q.work.texts.size()) {
      q.result.rows = static_cast<uint32_t>(q.work.texts.size());
      q.result.dim = static_cast<uint32_t>(dim);
      ++st.completed;
      self->send(q.reply_to, done_atom::value, q.work.id, std::move(q.result));
      queue.pop_front();
    }
  }
  auto pings = std::move(st.deferred_pings);
  st.deferred_pings.clear();
  for (auto& [reply_to, seq] : pings)
    answer_ping(self, reply_to, seq);
}

/// True if the chunk goes to the compute thread: the worker has one, and
/// another chunk is away (rows come back in order), or the chunk holds the
/// hang marker, or nothing was measured yet, or it holds more than
/// `max_inline_bytes` of text, or its estimate exceeds `cfg.inline_compute`.
bool runs_away(const worker_actor_state& st, const worker_config& cfg,
               const chunk_work& c) {
  if (!cfg.compute_thread)
    return false;
  if (!st.away.empty() || c.hang || st.text_ns <= 0 || c.text_bytes > max_inline_bytes)
    return true;
  auto estimate = st.text_ns * static_cast<double>(c.texts.size());
  return estimate >
         static_cast<double>(std::chrono::nanoseconds{cfg.inline_compute}.count());
}

/// Takes back `c`, the newest chunk away, if the compute thread has not
/// started it: its texts count as not sent again, so the next chunk takes
/// embed work first. An embed job thus waits behind at most the one chunk
/// being computed.
void withdraw(worker_actor_state& st, chunk_work& c) {
  int expected = chunk_work::waiting;
  if (!c.stage.compare_exchange_strong(expected, chunk_work::withdrawn))
    return;
  for (auto& part : c.parts)
    for (auto& q : st.queues[part.lane])
      if (q.work.id == part.job && q.sent >= part.take) {
        q.sent -= part.take;
        break;
      }
}

/// Embeds the next chunk: the texts not yet handed to a chunk, whole jobs
/// from the front of the queues and a part of a long batch, up to
/// `chunk_text_budget` texts in one embedder call; inline, or on the compute
/// thread (`runs_away`).
void run_chunk(worker_actor* self, const worker_config& cfg) {
  auto& st = self->state;
  std::shared_ptr<chunk_work> chunk;
  if (st.spare.empty()) {
    chunk = std::make_shared<chunk_work>();
  } else {
    chunk = std::move(st.spare.back());
    st.spare.pop_back();
  }
  auto& c = *chunk;
  c.texts.clear();
  c.text_bytes = 0;
  c.keep.clear();
  c.parts.clear();
  c.hang = false;
  c.hung = false;
  c.stage.store(chunk_work::waiting);
  size_t budget = chunk_text_budget(st, cfg);
  // Embed work first, then batch work fills what the chunk has left.
  c.task = first_unsent(st)->work.task;
  bool first = true;
  bool full = false;
  for (uint8_t ln = 0; ln < 2 && !full; ++ln) {
    for (auto& q : st.queues[ln]) {
      if (q.sent == q.work.texts.size())
        continue;  // in a chunk already
      // A retried (solo) job is embedded alone: it ends a chunk and starts one.
      if (budget == 0 || q.work.task != c.task || (!first && q.work.solo)) {
        full = true;
        break;
      }
      auto take = std::min(budget, q.work.texts.size() - q.sent);
      for (size_t i = q.sent; i < q.sent + take; ++i) {
        c.texts.emplace_back(q.work.texts[i]);
        c.text_bytes += q.work.texts[i].size();
        if (!cfg.fault.hang_marker.empty() &&
            q.work.texts[i].find(cfg.fault.hang_marker) != std::string::npos)
          c.hang = true;
      }
      c.keep.push_back(q.work.texts);
      c.parts.push_back({ln, q.work.id, take});
      q.sent += take;
      budget -= take;
      first = false;
      if (q.work.solo) {
        full = true;
        break;
      }
    }
  }
  if (!runs_away(st, cfg, c)) {
    compute_chunk(cfg, c);
    finish_chunk(self, cfg, c);
    st.spare.push_back(std::move(chunk));
    return;
  }
  if (!st.compute)
    st.compute = self->spawn<caf::detached>(compute_behavior,
                                            caf::actor_cast<caf::actor>(self), cfg);
  st.away.push_back(chunk);
  self->request(st.compute, caf::infinite, compute_atom::value, chunk_handle{chunk})
      .then(
          [self, cfg](chunk_handle& h) {
            auto& s = self->state;
            // The compute thread answers in order: this is the oldest away.
            s.away.pop_front();
            if (h.ptr->stage.load() == chunk_work::withdrawn)
              h.ptr->keep.clear();
            else
              finish_chunk(self, cfg, *h.ptr);
            s.spare.push_back(std::move(h.ptr));
            schedule_run(self);
          },
          [self](caf::error& err) {
            self->quit(make_error(pool_errc::worker_failed,
                                  "compute thread lost: " + caf::to_string(err)));
          });
}

/// True if the current message may be obeyed: the worker is not retired and
/// the sender is one `cfg.accepts`. A retired worker quits here.
bool admitted(worker_actor* self, const worker_config& cfg) {
  if (cfg.retired && cfg.retired->load()) {
    self->quit();
    return false;
  }
  if (cfg.accepts && !cfg.accepts(self->current_sender())) {
    if (auto n = foreign_messages::instance().note(); n > 0) {
      auto& sender = self->current_sender();
      log_foreign("worker", "work or ping", sender ? sender->node() : caf::node_id{}, "",
                  n);
    }
    return false;
  }
  return true;
}

caf::behavior worker_behavior(worker_actor* self, worker_config cfg) {
  guard_internal_actor(self, "worker");
  if (cfg.owner) {
    // A strong handle for the monitor: the owner may already be gone (a node
    // stopping while it starts), and CAF 0.17 monitors an actor_addr through
    // a raw pointer that is not kept alive.
    auto owner = caf::actor_cast<caf::actor>(cfg.owner);
    if (!owner) {
      self->quit();
      return {};
    }
    self->monitor(owner);
    self->set_down_handler([=](caf::down_msg& msg) {
      if (msg.source == cfg.owner)
        self->quit(msg.reason);
    });
  }
  return {
      [=](work_atom, job& work) {
        self->took_work();
        if (!admitted(self, cfg))
          return;
        auto& st = self->state;
        auto reply_to = caf::actor_cast<caf::actor>(self->current_sender());
        if (held_jobs(st) >= cfg.max_jobs) {
          ++st.failed;
          self->send(reply_to, fail_atom::value, work.id,
                     make_error(pool_errc::overloaded, "worker holds " +
                                                           std::to_string(held_jobs(st)) +
                                                           " jobs, its whole credit"));
          return;
        }
        ++st.received;
        if (cfg.fault.crash_every > 0 && st.received % cfg.fault.crash_every == 0) {
          log_event("worker_crash_drill")
              .add("worker", cfg.slot)
              .add("received", st.received)
              .write(*st.log, spdlog::level::warn);
          self->quit(make_error(pool_errc::worker_failed, "fault drill: crash"));
          return;
        }
        if (work.texts.empty()) {
          ++st.completed;
          matrix empty;
          empty.dim = static_cast<uint32_t>(cfg.model->dim());
          self->send(reply_to, done_atom::value, work.id, std::move(empty));
          return;
        }
        auto deadline = steady_time::max();
        if (work.time_left_ns > 0)
          deadline = std::chrono::steady_clock::now() +
                     std::chrono::nanoseconds{work.time_left_ns};
        auto ln = work.lane == static_cast<uint8_t>(lane::embed) ? 0 : 1;
        st.queues[ln].push_back(
            queued_job{std::move(work), std::move(reply_to), {}, 0, 0, {}, deadline});
        if (ln == 0 && st.away.size() == max_chunks_away)
          withdraw(st, *st.away.back());
        schedule_run(self);
      },
      [=](run_atom) {
        if (cfg.retired && cfg.retired->load()) {
          self->quit();
          return;
        }
        if (self->current_sender() && self->current_sender().get() != self->ctrl())
          return;  // its own reminder only
        auto& st = self->state;
        st.run_scheduled = false;
        if (st.away.size() >= max_chunks_away)
          return;  // a chunk's return schedules the next run
        drop_expired(self);
        if (first_unsent(st))
          run_chunk(self, cfg);
        schedule_run(self);
      },
      [=](ping_atom, uint64_t seq) {
        if (!admitted(self, cfg))
          return;
        auto reply_to = caf::actor_cast<caf::actor>(self->current_sender());
        if (!self->state.away.empty())
          self->state.deferred_pings.emplace_back(std::move(reply_to), seq);
        else
          answer_ping(self, reply_to, seq);
      },
  };
}

}  // namespace

caf::actor spawn_worker(caf::actor_system& sys, worker_config cfg, bool own_thread) {
  cfg.compute_thread = own_thread;
  if (!cfg.owner && !cfg.retired) {
    // Nobody to obey: a plain actor (deterministic tests).
    return sys.spawn(worker_behavior, std::move(cfg));
  }
  using impl = guarded_actor<worker_actor_state, worker_actor>;
  auto owner = cfg.owner;
  impl::init_fn init = [cfg = std::move(cfg)](impl* self) mutable {
    return worker_behavior(self, std::move(cfg));
  };
  impl::options opts;
  opts.owner = owner;
  return sys.spawn<impl>(std::move(opts), std::move(init));
}

void release_hung_workers() {
  hung_workers_released = true;
}

}  // namespace pool::detail
