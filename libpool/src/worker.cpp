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

namespace {

std::atomic<bool> hung_workers_released{false};

using steady_time = std::chrono::steady_clock::time_point;

struct queued_job {
  job work;
  caf::actor reply_to;
  matrix result;
  size_t next = 0;     // index of the next text to embed
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
  std::vector<float> scratch;
  std::vector<std::string_view> chunk_texts;
  /// Estimated nanoseconds one text takes, from the chunks embedded so far:
  /// rises at once to a slower chunk's, falls by a quarter of the difference
  /// after a faster one. Zero = nothing measured yet.
  double text_ns = 0;
  embed_report report;
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

/// The queue the next chunk comes from: embed work first.
std::deque<queued_job>& next_queue(worker_actor_state& st) {
  return st.queues[0].empty() ? st.queues[1] : st.queues[0];
}

/// Answers `deadline_exceeded` for every held job whose time ran out: nothing
/// is computed for a caller that has gone.
void drop_expired(worker_actor* self) {
  auto now = std::chrono::steady_clock::now();
  for (auto& q : self->state.queues) {
    for (auto i = q.begin(); i != q.end();) {
      if (i->deadline > now) {
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
  if (!self->state.run_scheduled && held_jobs(self->state) > 0) {
    self->state.run_scheduled = true;
    self->send(self, run_atom::value);
  }
}

/// Embeds the next chunk: whole jobs from the front of the queue, and a part
/// of a long batch, up to `chunk_text_budget` texts in one embedder call.
void run_chunk(worker_actor* self, const worker_config& cfg) {
  auto& st = self->state;
  auto dim = cfg.model->dim();
  st.chunk_texts.clear();
  size_t budget = chunk_text_budget(st, cfg);
  bool hang = false;
  // Embed work first, then batch work fills what the chunk has left.
  const auto task = next_queue(st).front().work.task;
  bool first = true;
  bool full = false;
  size_t taken[2] = {0, 0};  // texts of each lane in this chunk
  for (size_t ln = 0; ln < 2 && !full; ++ln) {
    for (auto& q : st.queues[ln]) {
      // A retried (solo) job is embedded alone: it ends a chunk and starts one.
      if (budget == 0 || q.work.task != task || (!first && q.work.solo)) {
        full = true;
        break;
      }
      auto take = std::min(budget, q.work.texts.size() - q.next);
      for (size_t i = q.next; i < q.next + take; ++i) {
        st.chunk_texts.emplace_back(q.work.texts[i]);
        if (!cfg.fault.hang_marker.empty() &&
            q.work.texts[i].find(cfg.fault.hang_marker) != std::string::npos)
          hang = true;
      }
      budget -= take;
      taken[ln] += take;
      first = false;
      if (q.work.solo) {
        full = true;
        break;
      }
    }
  }
  if (hang) {
    log_event("worker_hang_drill")
        .add("worker", cfg.slot)
        .write(*st.log, spdlog::level::warn);
    hang_until_released();
    self->quit(make_error(pool_errc::worker_failed, "fault drill: hang released"));
    return;
  }
  st.scratch.resize(st.chunk_texts.size() * dim);
  auto started = std::chrono::steady_clock::now();
  caf::error failure;
  try {
    cfg.model->embed_counted(st.chunk_texts, task, st.scratch.data(), st.report);
  } catch (const std::exception& ex) {
    failure = make_error(pool_errc::worker_failed,
                         std::string{"embedder failed: "} + ex.what());
  }
  if (cfg.fault.compute_delay.count() > 0)
    std::this_thread::sleep_for(cfg.fault.compute_delay * st.chunk_texts.size());
  const auto took = std::chrono::steady_clock::now() - started;
  note_chunk_time(st, took, st.chunk_texts.size());
  const auto chunk_us = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(took).count());
  if (cfg.metrics) {
    cfg.metrics->compute.observe(chunk_us);
    cfg.metrics->batch_texts.observe(st.chunk_texts.size());
    uint64_t tokens = 0;
    for (auto t : st.report.tokens) {
      tokens += t;
      cfg.metrics->input_tokens.observe(t);
    }
    cfg.metrics->batch_tokens.observe(tokens);
  }
  // Hand out the rows, lane by lane, and answer every job that is complete.
  size_t row = 0;
  for (size_t ln = 0; ln < 2; ++ln) {
    auto& queue = st.queues[ln];
    auto remaining = taken[ln];
    while (remaining > 0 && !queue.empty()) {
      auto& q = queue.front();
      auto take = std::min(remaining, q.work.texts.size() - q.next);
      if (!failure) {
        note_report(q, st.report, row, take, chunk_us);
        if (q.result.values.empty())
          q.result.values.resize(q.work.texts.size() * dim);
        std::copy(st.scratch.begin() + static_cast<std::ptrdiff_t>(row * dim),
                  st.scratch.begin() + static_cast<std::ptrdiff_t>((row + take) * dim),
                  q.result.values.begin() + static_cast<std::ptrdiff_t>(q.next * dim));
      }
      q.next += take;
      row += take;
      remaining -= take;
      if (failure) {
        ++st.failed;
        self->send(q.reply_to, fail_atom::value, q.work.id, failure);
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
  }
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
            queued_job{std::move(work), std::move(reply_to), {}, 0, {}, deadline});
        schedule_run(self);
      },
      [=](run_atom) {
        if (cfg.retired && cfg.retired->load()) {
          self->quit();
          return;
        }
        if (self->current_sender() && self->current_sender().get() != self->ctrl())
          return;  // its own reminder only
        self->state.run_scheduled = false;
        drop_expired(self);
        if (held_jobs(self->state) > 0)
          run_chunk(self, cfg);
        schedule_run(self);
      },
      [=](ping_atom, uint64_t seq) {
        if (!admitted(self, cfg))
          return;
        auto& st = self->state;
        worker_report report{queue_depth(self), st.completed, st.failed};
        auto reply_to = caf::actor_cast<caf::actor>(self->current_sender());
        self->send<caf::message_priority::high>(reply_to, pong_atom::value, seq, report);
      },
  };
}

}  // namespace

caf::actor spawn_worker(caf::actor_system& sys, worker_config cfg, bool detached) {
  if (!cfg.owner && !cfg.retired) {
    // Nobody to obey: a plain actor (deterministic tests).
    if (detached)
      return sys.spawn<caf::detached>(worker_behavior, std::move(cfg));
    return sys.spawn(worker_behavior, std::move(cfg));
  }
  using impl = guarded_actor<worker_actor_state, worker_actor>;
  auto owner = cfg.owner;
  impl::init_fn init = [cfg = std::move(cfg)](impl* self) mutable {
    return worker_behavior(self, std::move(cfg));
  };
  impl::options opts;
  opts.owner = owner;
  if (detached)
    return sys.spawn<impl, caf::detached>(std::move(opts), std::move(init));
  return sys.spawn<impl>(std::move(opts), std::move(init));
}

void release_hung_workers() {
  hung_workers_released = true;
}

}  // namespace pool::detail
