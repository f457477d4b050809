#include "pool/client.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <set>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <utility>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include "defaults.hpp"
#include "pool/caf_defaults.hpp"
#include "pool/tls.hpp"
#include "tcp_sockets.hpp"

namespace pool {

namespace {

using steady = std::chrono::steady_clock;

using detail::expire_interval;
using detail::reconnect_backoff_max;
using detail::reconnect_backoff_min;

using endpoint = std::pair<std::string, uint16_t>;

std::string endpoint_name(const endpoint& ep) {
  return ep.first + ":" + std::to_string(ep.second);
}

/// The middleman actor that connects (CAF's, or the openssl module's).
caf::io::middleman_actor connector(caf::actor_system& sys, bool tls) {
  return tls ? sys.openssl_manager().actor_handle() : sys.middleman().actor_handle();
}

/// The error of a connect attempt, for people.
std::string connect_failure(const caf::error& err, caf::timespan timeout) {
  if (err == caf::sec::request_timeout)
    return "no handshake within " +
           std::to_string(
               std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()) +
           " ms";
  return caf::actor_system_config::render(err);
}

caf::error timeout_error() {
  return make_error(pool_errc::deadline_exceeded, "no answer within the client timeout");
}

struct call_base;

/// The window and the counters, shared by the public API (any thread) and
/// the client actor. Thread-safe.
struct shared_state {
  explicit shared_state(uint32_t w) : window(w) {}

  const uint32_t window;  // 0 = unlimited
  std::string peer;       // "host:port", for messages; guarded by mtx once shared

  std::mutex mtx;
  std::condition_variable credit_returned;
  uint32_t in_flight = 0;  // guarded by mtx
  bool connected = true;   // guarded by mtx
  bool closed = false;     // guarded by mtx

  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> answered{0};
  std::atomic<uint64_t> timed_out{0};
  std::atomic<uint64_t> lost{0};
  std::atomic<uint64_t> late_answers{0};
  std::atomic<uint64_t> reconnects{0};
  std::atomic<uint64_t> listed{0};
  std::atomic<uint64_t> lists{0};

  /// Calls handed over by the public API that the client actor has not taken
  /// yet, oldest first, and whether a message telling it to take them is on
  /// its way: a burst of calls costs the actor one message and at most one
  /// wake-up. Guarded by mtx. Embed and batch calls in it hold window
  /// credits, so the window bounds them; status and metrics calls do not
  /// count against it (`client_options::window`).
  std::deque<std::shared_ptr<call_base>> inbox;
  bool inbox_announced = false;

  /// Error a call gets when the client cannot send; none if it can. Requires
  /// mtx held.
  caf::error refusal() const {
    if (closed)
      return make_error(pool_errc::unavailable, "not sent: the client was closed");
    if (!connected)
      return make_error(pool_errc::unavailable,
                        "not sent: lost the connection to " + peer);
    return caf::none;
  }

  /// Takes a window credit, waiting until `deadline` at most.
  caf::error acquire(steady::time_point deadline) {
    std::unique_lock<std::mutex> guard{mtx};
    for (;;) {
      if (auto err = refusal())
        return err;
      if (window == 0 || in_flight < window) {
        ++in_flight;
        return caf::none;
      }
      if (credit_returned.wait_until(guard, deadline) == std::cv_status::timeout &&
          steady::now() >= deadline) {
        if (auto err = refusal())
          return err;
        if (in_flight < window) {
          ++in_flight;
          return caf::none;
        }
        return make_error(pool_errc::deadline_exceeded,
                          "no window credit within the client timeout (window " +
                              std::to_string(window) + ")");
      }
    }
  }

  /// Returns `n` credits at once (one wake-up for the answers of a list).
  void release(uint32_t n = 1) {
    if (n == 0)
      return;
    {
      std::lock_guard<std::mutex> guard{mtx};
      in_flight -= n;
    }
    if (n == 1)
      credit_returned.notify_one();
    else
      credit_returned.notify_all();
  }

  void set_disconnected() {
    {
      std::lock_guard<std::mutex> guard{mtx};
      connected = false;
    }
    credit_returned.notify_all();
  }

  void set_connected(std::string new_peer) {
    {
      std::lock_guard<std::mutex> guard{mtx};
      peer = std::move(new_peer);
      connected = true;
    }
    ++reconnects;
  }

  void set_closed() {
    {
      std::lock_guard<std::mutex> guard{mtx};
      closed = true;
    }
    credit_returned.notify_all();
  }
};

struct client_actor_state;
using client_actor = caf::stateful_actor<client_actor_state>;

/// One call on its way: its request, its remaining time and who to tell.
/// Owned by the public API until sent, then by the client actor's pending
/// table until settled.
struct call_base {
  caf::message request;
  steady::time_point deadline;
  bool windowed = true;  // holds a window credit until settled
  /// An embed without a request id, which may travel in a list of embeds
  /// (`client_options::coalesce`): a `typed_call<matrix>` whose `request` is
  /// empty; it is made from these when the call goes alone.
  bool listable = false;
  std::string text;
  std::string task;
  std::string model;
  virtual ~call_base() = default;
  /// Sends the request from `self`; the answer settles call `id`.
  virtual void issue(client_actor* self, uint64_t id) = 0;
  virtual void fail(caf::error err) = 0;
};

/// The fields of an embed call that may travel in a list (`call_base::listable`).
struct listable_embed {
  std::string text;
  std::string task;
  std::string model;
};

/// Fails call `c`, which was never sent, with `err`, returning its window
/// credit if it holds one.
void fail_unsent(shared_state& sh, call_base& c, caf::error err) {
  if (c.windowed)
    sh.release();
  c.fail(std::move(err));
}

struct client_actor_state {
  static inline const char* name = "embedpool.client";
  caf::actor gateway;
  std::shared_ptr<shared_state> shared;
  std::unordered_map<uint64_t, std::shared_ptr<call_base>> pending;
  /// The deadlines of the pending calls, earliest first.
  std::set<std::pair<steady::time_point, uint64_t>> deadlines;
  bool expire_scheduled = false;
  uint64_t next_id = 1;
  bool connected = true;
  /// Reconnection (`client_options::reconnect`): every endpoint, the one in
  /// use, and the attempts failed since the node was lost.
  bool reconnect = false;
  bool tls = false;
  caf::timespan connect_timeout{};
  std::vector<endpoint> endpoints;
  size_t current = 0;
  uint32_t failures = 0;
  /// Coalescing (`client_options::coalesce`): most embeds per message (< 2 =
  /// off); whether the node answers lists (false after one answered "unsupported
  /// message": a node of an earlier release); the listable calls not sent yet,
  /// oldest first (ids, some maybe settled by their deadline meanwhile); the
  /// requests carrying listable calls that have no answer yet, counted per
  /// connection (`epoch` changes when the node is lost).
  uint32_t coalesce = 0;
  bool lists_supported = true;
  std::deque<uint64_t> outbox;
  uint32_t lists_in_flight = 0;
  uint64_t epoch = 0;
  /// The calls taken from the inbox at once (kept for its memory).
  std::deque<std::shared_ptr<call_base>> taken;
};

/// Removes call `id` from the pending table and returns its credit (or,
/// with `credits`, adds it there for the caller to return); null if it was
/// already settled.
std::shared_ptr<call_base> settle(client_actor* self, uint64_t id,
                                  uint32_t* credits = nullptr) {
  auto& st = self->state;
  auto i = st.pending.find(id);
  if (i == st.pending.end())
    return nullptr;
  auto ptr = std::move(i->second);
  st.pending.erase(i);
  st.deadlines.erase({ptr->deadline, id});
  if (ptr->windowed) {
    if (credits != nullptr)
      ++*credits;
    else
      st.shared->release();
  }
  return ptr;
}

void schedule_expiry(client_actor* self) {
  auto& st = self->state;
  if (st.expire_scheduled || st.deadlines.empty())
    return;
  st.expire_scheduled = true;
  self->delayed_send(self, expire_interval, client_expire_atom::value);
}

/// Runs a user callback; an exception escaping it must not kill the actor
/// that serves every other call.
template <class F>
void run_callback(F&& f) {
  try {
    f();
  } catch (...) {
  }
}

/// Settles call `id` with an answer from the node: `deliver(call)` runs (an
/// exception escaping it is ignored), or the answer counts as late when the
/// call was settled already.
template <class F>
void settle_with(client_actor* self, uint64_t id, F&& deliver) {
  auto& sh = *self->state.shared;
  auto c = settle(self, id);
  if (!c) {
    ++sh.late_answers;
    return;
  }
  ++sh.answered;
  run_callback([&] { deliver(*c); });
}

template <class T>
struct typed_call : call_base {
  callback<T> done;

  void issue(client_actor* self, uint64_t id) override {
    self->request(self->state.gateway, caf::infinite, request)
        .then(
            [self, id](T& value) {
              settle_with(self, id, [&](call_base& c) {
                static_cast<typed_call<T>&>(c).done(std::move(value));
              });
            },
            [self, id](caf::error& err) {
              settle_with(self, id, [&](call_base& c) { c.fail(std::move(err)); });
            });
  }

  void fail(caf::error err) override {
    run_callback([&] { done(std::move(err)); });
  }
};

void flush_outbox(client_actor* self);

/// A request carrying listable calls was answered: one fewer in flight, and
/// the calls that waited for it go out.
void list_answered(client_actor* self, uint64_t epoch) {
  auto& st = self->state;
  if (epoch != st.epoch)
    return;
  if (st.lists_in_flight > 0)
    --st.lists_in_flight;
  if (!st.outbox.empty())
    flush_outbox(self);
}

/// True for the answer of a node that does not know lists of embeds.
bool unsupported_list(const caf::error& err) {
  return err == caf::sec::unexpected_message ||
         (pool_code(err) == pool_errc::invalid_input &&
          error_message(err).rfind("unsupported message", 0) == 0);
}

/// True for a whole-list answer about the list's input rather than the node's
/// state: longer than the node's `pool.max-batch-items`, an unknown model or
/// task, or one text the model refused (a list is one job at the worker).
/// Each call of such a list gets its own answer when sent alone.
bool refused_list_input(const caf::error& err) {
  auto code = pool_code(err);
  return code == pool_errc::invalid_input || code == pool_errc::too_large;
}

/// The `pool.max-batch-items` a node names when it refuses a list as too
/// long ("... pool.max-batch-items is M"), or 0.
uint32_t list_limit_named(const caf::error& err) {
  static constexpr std::string_view key = "pool.max-batch-items is ";
  const auto msg = error_message(err);
  const auto at = msg.find(key);
  if (pool_code(err) != pool_errc::too_large || at == std::string::npos)
    return 0;
  uint64_t limit = 0;
  for (auto i = at + key.size(); i < msg.size() && msg[i] >= '0' && msg[i] <= '9'; ++i) {
    limit = limit * 10 + static_cast<uint64_t>(msg[i] - '0');
    if (limit > UINT32_MAX)
      return 0;
  }
  return static_cast<uint32_t>(limit);
}

/// Sends pending listable call `id` alone, as `(embed, text, task [, model])`;
/// `again`: it was counted as sent already, in a list the node refused.
void send_alone(client_actor* self, uint64_t id, bool again = false) {
  auto& st = self->state;
  auto i = st.pending.find(id);
  if (i == st.pending.end())
    return;
  if (!again)
    ++st.shared->sent;
  // The text is sent no more than once alone: it moves into the message.
  auto& call = *i->second;
  auto msg = call.model.empty()
                 ? caf::make_message(embed_atom::value, std::move(call.text), call.task)
                 : caf::make_message(embed_atom::value, std::move(call.text), call.task,
                                     call.model);
  ++st.lists_in_flight;
  self->request(st.gateway, caf::infinite, std::move(msg))
      .then(
          [self, id, epoch = st.epoch](matrix& value) {
            settle_with(self, id, [&](call_base& c) {
              static_cast<typed_call<matrix>&>(c).done(std::move(value));
            });
            list_answered(self, epoch);
          },
          [self, id, epoch = st.epoch](caf::error& err) {
            settle_with(self, id, [&](call_base& c) { c.fail(std::move(err)); });
            list_answered(self, epoch);
          });
}

/// Settles the calls of a list with its answer, text by text.
void settle_list(client_actor* self, const std::vector<uint64_t>& ids,
                 embed_answers& answers) {
  auto& sh = *self->state.shared;
  size_t with_rows = 0;
  for (auto& err : answers.errors)
    if (!err)
      ++with_rows;
  auto dim = size_t{answers.rows.dim};
  if (answers.errors.size() != ids.size() || answers.rows.rows != with_rows ||
      answers.rows.values.size() != with_rows * dim) {
    auto err =
        make_error(pool_errc::invalid_input, "malformed answer to a list of " +
                                                 std::to_string(ids.size()) + " embeds");
    for (auto id : ids)
      settle_with(self, id, [&](call_base& c) { c.fail(err); });
    return;
  }
  size_t row = 0;
  uint32_t credits = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto c = settle(self, ids[i], &credits);
    auto& err = answers.errors[i];
    // Decided before `err` is moved into a callback.
    const bool has_row = !err;
    if (!c) {
      ++sh.late_answers;
    } else if (err) {
      ++sh.answered;
      c->fail(std::move(err));
    } else {
      ++sh.answered;
      matrix one;
      one.rows = 1;
      one.dim = static_cast<uint32_t>(dim);
      auto first = answers.rows.values.begin() + static_cast<std::ptrdiff_t>(row * dim);
      one.values.assign(first, first + static_cast<std::ptrdiff_t>(dim));
      auto& typed = static_cast<typed_call<matrix>&>(*c);
      run_callback([&] { typed.done(std::move(one)); });
    }
    if (has_row)
      ++row;
  }
  sh.release(credits);
}

/// Sends pending listable calls `ids` (same task and model, at least two) as
/// one `(embed, texts, task, model)`.
void send_list(client_actor* self, std::vector<uint64_t> ids) {
  auto& st = self->state;
  std::vector<std::string> texts;
  texts.reserve(ids.size());
  std::string task;
  std::string model;
  for (auto id : ids) {
    auto& c = *st.pending.at(id);
    texts.push_back(c.text);
    task = c.task;
    model = c.model;
  }
  st.shared->sent += ids.size();
  st.shared->listed += ids.size();
  ++st.shared->lists;
  ++st.lists_in_flight;
  auto shared_ids = std::make_shared<std::vector<uint64_t>>(std::move(ids));
  self->request(st.gateway, caf::infinite, embed_atom::value, std::move(texts),
                std::move(task), std::move(model))
      .then(
          [self, shared_ids, epoch = st.epoch](embed_answers& answers) {
            settle_list(self, *shared_ids, answers);
            list_answered(self, epoch);
          },
          [self, shared_ids, epoch = st.epoch](caf::error& err) {
            auto& state = self->state;
            if (epoch == state.epoch && unsupported_list(err)) {
              // A node of an earlier release: it computed nothing, so every
              // call of the list goes again, alone, and later ones too.
              state.lists_supported = false;
              for (auto id : *shared_ids)
                send_alone(self, id, true);
              list_answered(self, epoch);
              return;
            }
            if (epoch == state.epoch && shared_ids->size() > 1 &&
                refused_list_input(err)) {
              // Refused for the input of the list as a whole: every call goes
              // again alone and gets its own answer, and later lists stay
              // within the limit the node named.
              if (auto limit = list_limit_named(err); limit > 0 && limit < state.coalesce)
                state.coalesce = limit;
              for (auto id : *shared_ids)
                send_alone(self, id, true);
              list_answered(self, epoch);
              return;
            }
            if (epoch == state.epoch && shared_ids->size() > 1 &&
                pool_code(err) == pool_errc::worker_failed) {
              // The node gave up on the list after its retries: one text in
              // it may break a worker every time, and its neighbours should
              // not fail with it. Every call goes again alone, once.
              for (auto id : *shared_ids)
                send_alone(self, id, true);
              list_answered(self, epoch);
              return;
            }
            for (auto id : *shared_ids)
              settle_with(self, id, [&](call_base& c) { c.fail(err); });
            list_answered(self, epoch);
          });
}

/// Sends every call waiting in the outbox: lists of up to `coalesce` calls
/// that share task and model (oldest first), a call alone where it has no
/// partner or the node does not know lists.
void flush_outbox(client_actor* self) {
  auto& st = self->state;
  auto waiting = std::move(st.outbox);
  st.outbox.clear();
  std::vector<bool> taken(waiting.size(), false);
  for (size_t i = 0; i < waiting.size(); ++i) {
    if (taken[i])
      continue;
    auto first = st.pending.find(waiting[i]);
    if (first == st.pending.end())
      continue;  // settled by its deadline while it waited
    std::vector<uint64_t> ids{waiting[i]};
    if (st.lists_supported) {
      // Partners are looked for among the next few calls only, so that many
      // different tasks or models cannot make the flush quadratic.
      const auto& head = *first->second;
      const auto scan_end = std::min(waiting.size(), i + 1 + 4 * size_t{st.coalesce});
      for (size_t j = i + 1; j < scan_end && ids.size() < st.coalesce; ++j) {
        if (taken[j])
          continue;
        auto k = st.pending.find(waiting[j]);
        if (k == st.pending.end()) {
          taken[j] = true;
          continue;
        }
        if (k->second->task == head.task && k->second->model == head.model) {
          ids.push_back(waiting[j]);
          taken[j] = true;
        }
      }
    }
    if (ids.size() == 1)
      send_alone(self, ids.front());
    else
      send_list(self, std::move(ids));
  }
}

/// Fails the calls waiting in the outbox with `err`: they never left.
void fail_outbox(client_actor* self, const caf::error& err) {
  auto& st = self->state;
  auto waiting = std::move(st.outbox);
  st.outbox.clear();
  for (auto id : waiting) {
    if (auto c = settle(self, id)) {
      ++st.shared->lost;
      c->fail(err);
    }
  }
}

/// Settles every pending call with `err`.
void fail_all(client_actor* self, const caf::error& err, bool count_as_lost) {
  auto& st = self->state;
  st.outbox.clear();
  auto calls = std::move(st.pending);
  st.pending.clear();
  st.deadlines.clear();
  for (auto& [id, c] : calls) {
    if (c->windowed)
      st.shared->release();
    if (count_as_lost)
      ++st.shared->lost;
    c->fail(err);
  }
}

/// How the client actor is set up.
struct client_actor_config {
  caf::actor gateway;
  std::shared_ptr<shared_state> shared;
  bool reconnect = false;
  bool tls = false;
  caf::timespan connect_timeout{};
  std::vector<endpoint> endpoints;
  size_t current = 0;  // the endpoint `gateway` lives at
  uint32_t coalesce = 0;
};

void schedule_reconnect(client_actor* self) {
  auto& st = self->state;
  auto exponent = std::min<uint32_t>(st.failures, 16);
  auto delay = std::min<std::chrono::milliseconds>(
      reconnect_backoff_min * (int64_t{1} << exponent), reconnect_backoff_max);
  self->delayed_send(self, st.failures == 0 ? std::chrono::milliseconds(0) : delay,
                     client_reconnect_atom::value);
}

/// Takes call `c` from the inbox: fails it if the node is lost or its time
/// is up, else sends it (alone, or in the outbox to share a list).
void take_call(client_actor* self, std::shared_ptr<call_base> c) {
  auto& st = self->state;
  if (!st.connected) {
    fail_unsent(*st.shared, *c,
                make_error(pool_errc::unavailable,
                           "not sent: lost the connection to " + st.shared->peer));
    return;
  }
  if (c->deadline <= steady::now()) {
    ++st.shared->timed_out;
    fail_unsent(*st.shared, *c, timeout_error());
    return;
  }
  auto id = st.next_id++;
  st.pending.emplace(id, c);
  st.deadlines.emplace(c->deadline, id);
  if (!c->listable) {
    ++st.shared->sent;
    c->issue(self, id);
  } else if (st.coalesce < 2 || !st.lists_supported ||
             (st.outbox.empty() && st.lists_in_flight < detail::messages_before_lists)) {
    send_alone(self, id);
  } else {
    // At once while few messages are on their way; else it waits for
    // the next answer (or a full list) and shares a message.
    st.outbox.push_back(id);
    if (st.lists_in_flight < detail::messages_before_lists ||
        st.outbox.size() >= st.coalesce)
      flush_outbox(self);
  }
  schedule_expiry(self);
}

caf::behavior client_behavior(client_actor* self, client_actor_config cfg) {
  auto& init = self->state;
  init.gateway = cfg.gateway;
  init.shared = std::move(cfg.shared);
  init.reconnect = cfg.reconnect;
  init.tls = cfg.tls;
  init.connect_timeout = cfg.connect_timeout;
  init.endpoints = std::move(cfg.endpoints);
  init.current = cfg.current;
  init.coalesce = cfg.coalesce;
  self->monitor(init.gateway);
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    if (msg.source != st.gateway.address() || !st.connected)
      return;
    st.connected = false;
    st.gateway = nullptr;
    ++st.epoch;
    st.lists_in_flight = 0;
    st.lists_supported = true;
    st.shared->set_disconnected();
    fail_outbox(self, make_error(pool_errc::unavailable,
                                 "not sent: lost the connection to " +
                                     endpoint_name(st.endpoints[st.current])));
    fail_all(
        self,
        make_error(pool_errc::unavailable, "lost the connection to " +
                                               endpoint_name(st.endpoints[st.current]) +
                                               " (" + caf::to_string(msg.reason) + ")"),
        true);
    if (st.reconnect) {
      st.failures = 0;
      schedule_reconnect(self);
    }
  });
  return {
      [self](client_reconnect_atom) {
        auto& st = self->state;
        if (st.connected)
          return;
        st.current = (st.current + 1) % st.endpoints.size();
        auto ep = st.endpoints[st.current];
        self->request(connector(self->system(), st.tls), st.connect_timeout,
                      caf::connect_atom::value, ep.first, ep.second)
            .then(
                [self, ep](caf::node_id&, caf::strong_actor_ptr& ptr,
                           std::set<std::string>&) {
                  auto& s = self->state;
                  if (s.connected)
                    return;
                  if (!ptr) {
                    ++s.failures;
                    schedule_reconnect(self);
                    return;
                  }
                  s.gateway = caf::actor_cast<caf::actor>(ptr);
                  s.connected = true;
                  s.failures = 0;
                  self->monitor(s.gateway);
                  s.shared->set_connected(endpoint_name(ep));
                },
                [self, ep](caf::error& err) {
                  auto& s = self->state;
                  if (err == caf::sec::request_timeout)
                    detail::shutdown_connections_to(ep.first, ep.second);
                  if (s.connected)
                    return;
                  ++s.failures;
                  schedule_reconnect(self);
                });
      },
      [self](client_call_atom) {
        auto& st = self->state;
        {
          std::lock_guard<std::mutex> guard{st.shared->mtx};
          st.taken.swap(st.shared->inbox);
          st.shared->inbox_announced = false;
        }
        for (auto& c : st.taken)
          take_call(self, std::move(c));
        st.taken.clear();
      },
      [self](client_expire_atom) {
        auto& st = self->state;
        st.expire_scheduled = false;
        auto now = steady::now();
        while (!st.deadlines.empty() && st.deadlines.begin()->first <= now) {
          auto first = *st.deadlines.begin();
          auto c = settle(self, first.second);
          st.deadlines.erase(first);  // in case the tables disagreed
          if (c) {
            ++st.shared->timed_out;
            c->fail(timeout_error());
          }
        }
        // Bounds the wait of a listable call when no answer comes to end it
        // (a node that stopped answering): one expiry interval.
        if (!st.outbox.empty())
          flush_outbox(self);
        schedule_expiry(self);
      },
      [self](client_close_atom) {
        auto& st = self->state;
        auto closed = make_error(pool_errc::unavailable, "the client was closed");
        fail_all(self, closed, false);
        {
          std::lock_guard<std::mutex> guard{st.shared->mtx};
          st.taken.swap(st.shared->inbox);
        }
        for (auto& c : st.taken)
          fail_unsent(*st.shared, *c, closed);
        st.taken.clear();
        self->quit();
      },
  };
}

/// Adapts an embed callback to the wire reply (a one-row matrix).
callback<matrix> first_row(callback<std::vector<float>> done) {
  return [done = std::move(done)](caf::expected<matrix> x) {
    if (!x) {
      done(std::move(x.error()));
      return;
    }
    if (x->rows != 1 || x->values.size() != x->dim) {
      done(make_error(pool_errc::invalid_input, "embed reply is not one row"));
      return;
    }
    done(std::move(x->values));
  };
}

}  // namespace

struct client::impl {
  client_options opts;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::actor gateway;
  caf::actor actor;  // the client actor
  std::shared_ptr<shared_state> shared;

  /// Hands a call to the client actor (its inbox) after taking a window
  /// credit; `done` runs on the calling thread if the call cannot be sent,
  /// else `on_send` (if any) runs on the calling thread right before the
  /// hand-over.
  /// `listable`: an embed call without a request id (`msg` empty; see
  /// `call_base::listable`), from `text`, `task`, `model`.
  template <class T>
  void submit(caf::message msg, callback<T> done, bool windowed,
              const send_hook& on_send = {}, listable_embed* listable = nullptr) {
    auto start = steady::now();
    auto deadline = start + opts.timeout;
    if (windowed) {
      if (auto err = shared->acquire(deadline)) {
        run_callback([&] { done(std::move(err)); });
        return;
      }
    } else {
      caf::error err;
      {
        std::lock_guard<std::mutex> guard{shared->mtx};
        err = shared->refusal();
      }
      if (err) {
        run_callback([&] { done(std::move(err)); });
        return;
      }
    }
    if (deadline <= steady::now()) {
      if (windowed)
        shared->release();
      run_callback([&] { done(timeout_error()); });
      return;
    }
    auto c = std::make_shared<typed_call<T>>();
    c->request = std::move(msg);
    if (listable != nullptr) {
      c->listable = true;
      c->text = std::move(listable->text);
      c->task = std::move(listable->task);
      c->model = std::move(listable->model);
    }
    c->deadline = deadline;
    c->windowed = windowed;
    c->done = std::move(done);
    if (on_send)
      run_callback(on_send);
    bool taken = false;
    bool announce = false;
    {
      std::lock_guard<std::mutex> guard{shared->mtx};
      // Once closed, the actor has taken its last calls from the inbox.
      if (!shared->closed) {
        shared->inbox.push_back(c);
        taken = true;
        announce = !std::exchange(shared->inbox_announced, true);
      }
    }
    if (!taken) {
      fail_unsent(*shared, *c,
                  make_error(pool_errc::unavailable, "not sent: the client was closed"));
      return;
    }
    if (announce)
      caf::anon_send(actor, client_call_atom::value);
  }

  template <class T>
  std::future<caf::expected<T>> submit_future(caf::message msg, bool windowed) {
    auto promise = std::make_shared<std::promise<caf::expected<T>>>();
    auto result = promise->get_future();
    submit<T>(
        std::move(msg),
        [promise](caf::expected<T> x) { promise->set_value(std::move(x)); }, windowed);
    return result;
  }
};

client::client(std::unique_ptr<impl> ptr) : impl_(std::move(ptr)) {}

client::~client() {
  if (!impl_)
    return;
  impl_->shared->set_closed();
  if (impl_->actor) {
    caf::scoped_actor self{*impl_->sys};
    self->request(impl_->actor, caf::infinite, client_close_atom::value)
        .receive([] {}, [](caf::error&) {});
  }
  impl_->actor = nullptr;
  impl_->gateway = nullptr;
  impl_->sys.reset();
}

caf::expected<std::unique_ptr<client>> client::connect(const client_options& opts) {
  auto ptr = std::make_unique<impl>();
  ptr->opts = opts;
  if (opts.timeout <= caf::timespan::zero())
    return make_error(pool_errc::invalid_input, "client timeout must be positive");
  if (auto err = validate_tls(opts.tls))
    return err;
  add_message_types(ptr->cfg);
  ptr->cfg.load<caf::io::middleman>();
  if (opts.tls.enabled())
    enable_tls(ptr->cfg, opts.tls);
  auto args = client_caf_defaults();
  args.insert(args.end(), opts.caf_args.begin(), opts.caf_args.end());
  std::istringstream no_ini;
  if (auto err = ptr->cfg.parse(args, no_ini))
    return err;
  ptr->sys = std::make_unique<caf::actor_system>(ptr->cfg);
  if (opts.connect_timeout <= caf::timespan::zero())
    return make_error(pool_errc::invalid_input,
                      "client connect timeout must be positive");
  std::vector<endpoint> endpoints{{opts.host, opts.port}};
  for (const auto& entry : opts.fallbacks) {
    auto endpoint = parse_host_port(entry, "fallback");
    if (!endpoint)
      return endpoint.error();
    endpoints.push_back(std::move(*endpoint));
  }
  // CAF's blocking remote_actor has no timeout (a node that accepts TCP but
  // never answers its handshake would hang us for ever): ask the middleman
  // actor with a request timeout instead.
  std::string failures;
  size_t current = 0;
  {
    caf::scoped_actor self{*ptr->sys};
    auto mm = connector(*ptr->sys, opts.tls.enabled());
    for (size_t i = 0; i < endpoints.size() && !ptr->gateway; ++i) {
      const auto& host = endpoints[i].first;
      const auto port = endpoints[i].second;
      std::string why;
      self->request(mm, opts.connect_timeout, caf::connect_atom::value, host, port)
          .receive(
              [&](caf::node_id&, caf::strong_actor_ptr& gw, std::set<std::string>&) {
                if (gw) {
                  ptr->gateway = caf::actor_cast<caf::actor>(gw);
                  current = i;
                } else {
                  why = "no actor published at this port";
                }
              },
              [&](caf::error& err) {
                why = connect_failure(err, opts.connect_timeout);
                if (err == caf::sec::request_timeout)
                  detail::shutdown_connections_to(host, port);
              });
      if (!ptr->gateway) {
        if (!failures.empty())
          failures += "; ";
        failures += endpoint_name(endpoints[i]) + ": " + why;
      }
    }
  }
  if (!ptr->gateway)
    return make_error(pool_errc::unavailable, "cannot connect to " + failures);
  // Protocol handshake: a node of another version is refused here, by name.
  // Bounded like the connect: a node that accepted but never answers.
  auto node_version = say_hello(*ptr->sys, ptr->gateway, opts.connect_timeout);
  if (!node_version) {
    auto code = pool_code(node_version.error());
    return make_error(code ? *code : pool_errc::unavailable,
                      endpoint_name(endpoints[current]) + ": " +
                          (code ? error_message(node_version.error())
                                : "no answer to the protocol hello: " +
                                      describe(node_version.error())));
  }
  ptr->shared = std::make_shared<shared_state>(opts.window);
  ptr->shared->peer = endpoint_name(endpoints[current]);
  client_actor_config acfg;
  acfg.gateway = ptr->gateway;
  acfg.shared = ptr->shared;
  acfg.reconnect = opts.reconnect;
  acfg.tls = opts.tls.enabled();
  acfg.connect_timeout = opts.connect_timeout;
  acfg.endpoints = std::move(endpoints);
  acfg.current = current;
  acfg.coalesce = opts.coalesce;
  ptr->actor = ptr->sys->spawn(client_behavior, std::move(acfg));
  return std::unique_ptr<client>{new client(std::move(ptr))};
}

namespace {

/// `(atom, payload, task)`, `(atom, payload, task, model)` when a model is
/// named, `(atom, payload, task, model, request_id)` when an id is given (the
/// shorter forms also reach nodes of earlier releases).
template <class Atom, class Payload>
caf::message request_message(Atom atom, Payload payload, std::string task,
                             std::string model, std::string request_id) {
  if (!request_id.empty())
    return caf::make_message(atom, std::move(payload), std::move(task), std::move(model),
                             std::move(request_id));
  if (model.empty())
    return caf::make_message(atom, std::move(payload), std::move(task));
  return caf::make_message(atom, std::move(payload), std::move(task), std::move(model));
}

caf::message status_message(std::string model) {
  if (model.empty())
    return caf::make_message(status_atom::value);
  return caf::make_message(status_atom::value, std::move(model));
}

}  // namespace

caf::expected<std::vector<float>> client::embed(const std::string& text,
                                                const std::string& task,
                                                const std::string& model,
                                                const std::string& request_id) {
  return embed_future(text, task, model, request_id).get();
}

caf::expected<matrix> client::embed_batch(const std::vector<std::string>& texts,
                                          const std::string& task,
                                          const std::string& model,
                                          const std::string& request_id) {
  return embed_batch_future(texts, task, model, request_id).get();
}

caf::expected<pool_status> client::status(const std::string& model) {
  return impl_->submit_future<pool_status>(status_message(model), false).get();
}

caf::expected<std::string> client::metrics() {
  return impl_->submit_future<std::string>(caf::make_message(metrics_atom::value), false)
      .get();
}

void client::embed_async(std::string text, callback<std::vector<float>> done,
                         std::string task, std::string model, std::string request_id) {
  embed_async(std::move(text), std::move(done), send_hook{}, std::move(task),
              std::move(model), std::move(request_id));
}

void client::embed_batch_async(std::vector<std::string> texts, callback<matrix> done,
                               std::string task, std::string model,
                               std::string request_id) {
  impl_->submit<matrix>(
      request_message(batch_atom::value, std::move(texts), std::move(task),
                      std::move(model), std::move(request_id)),
      std::move(done), true);
}

void client::embed_async(std::string text, callback<std::vector<float>> done,
                         send_hook on_send, std::string task, std::string model,
                         std::string request_id) {
  if (request_id.empty()) {
    listable_embed fields{std::move(text), std::move(task), std::move(model)};
    impl_->submit<matrix>(caf::message{}, first_row(std::move(done)), true, on_send,
                          &fields);
    return;
  }
  impl_->submit<matrix>(
      request_message(embed_atom::value, std::move(text), std::move(task),
                      std::move(model), std::move(request_id)),
      first_row(std::move(done)), true, on_send);
}

void client::embed_batch_async(std::vector<std::string> texts, callback<matrix> done,
                               send_hook on_send, std::string task, std::string model,
                               std::string request_id) {
  impl_->submit<matrix>(
      request_message(batch_atom::value, std::move(texts), std::move(task),
                      std::move(model), std::move(request_id)),
      std::move(done), true, on_send);
}

void client::status_async(callback<pool_status> done, std::string model) {
  impl_->submit<pool_status>(status_message(std::move(model)), std::move(done), false);
}

std::future<caf::expected<std::vector<float>>> client::embed_future(
    std::string text, std::string task, std::string model, std::string request_id) {
  auto promise = std::make_shared<std::promise<caf::expected<std::vector<float>>>>();
  auto result = promise->get_future();
  embed_async(
      std::move(text),
      [promise](caf::expected<std::vector<float>> x) {
        promise->set_value(std::move(x));
      },
      std::move(task), std::move(model), std::move(request_id));
  return result;
}

std::future<caf::expected<matrix>> client::embed_batch_future(
    std::vector<std::string> texts, std::string task, std::string model,
    std::string request_id) {
  return impl_->submit_future<matrix>(
      request_message(batch_atom::value, std::move(texts), std::move(task),
                      std::move(model), std::move(request_id)),
      true);
}

client_stats client::stats() const {
  auto& sh = *impl_->shared;
  client_stats result;
  result.sent = sh.sent.load();
  result.answered = sh.answered.load();
  result.timed_out = sh.timed_out.load();
  result.lost = sh.lost.load();
  result.late_answers = sh.late_answers.load();
  result.reconnects = sh.reconnects.load();
  result.listed = sh.listed.load();
  result.lists = sh.lists.load();
  std::lock_guard<std::mutex> guard{sh.mtx};
  result.in_flight = sh.in_flight;
  result.connected = sh.connected;
  result.node = sh.peer;
  return result;
}

bool client::connected() const {
  std::lock_guard<std::mutex> guard{impl_->shared->mtx};
  return impl_->shared->connected;
}

const client_options& client::options() const {
  return impl_->opts;
}

}  // namespace pool
