#include "pool/client.hpp"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <sstream>
#include <unordered_map>

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

  void release() {
    {
      std::lock_guard<std::mutex> guard{mtx};
      --in_flight;
    }
    credit_returned.notify_one();
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
  virtual ~call_base() = default;
  /// Sends the request from `self`; the answer settles call `id`.
  virtual void issue(client_actor* self, uint64_t id) = 0;
  virtual void fail(caf::error err) = 0;
};

/// A call handed to the client actor (local messages only).
struct call_handle {
  std::shared_ptr<call_base> ptr;
};

}  // namespace

}  // namespace pool

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(pool::call_handle)

namespace pool {

namespace {

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
};

/// Removes call `id` from the pending table and returns its credit; null if
/// it was already settled.
std::shared_ptr<call_base> settle(client_actor* self, uint64_t id) {
  auto& st = self->state;
  auto i = st.pending.find(id);
  if (i == st.pending.end())
    return nullptr;
  auto ptr = std::move(i->second);
  st.pending.erase(i);
  st.deadlines.erase({ptr->deadline, id});
  if (ptr->windowed)
    st.shared->release();
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

template <class T>
struct typed_call : call_base {
  callback<T> done;

  void issue(client_actor* self, uint64_t id) override {
    self->request(self->state.gateway, caf::infinite, request)
        .then(
            [self, id](T& value) {
              auto& sh = *self->state.shared;
              auto c = settle(self, id);
              if (!c) {
                ++sh.late_answers;
                return;
              }
              ++sh.answered;
              auto& typed = static_cast<typed_call<T>&>(*c);
              run_callback([&] { typed.done(std::move(value)); });
            },
            [self, id](caf::error& err) {
              auto& sh = *self->state.shared;
              auto c = settle(self, id);
              if (!c) {
                ++sh.late_answers;
                return;
              }
              ++sh.answered;
              run_callback([&] { c->fail(std::move(err)); });
            });
  }

  void fail(caf::error err) override {
    run_callback([&] { done(std::move(err)); });
  }
};

/// Settles every pending call with `err`.
void fail_all(client_actor* self, const caf::error& err, bool count_as_lost) {
  auto& st = self->state;
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
};

void schedule_reconnect(client_actor* self) {
  auto& st = self->state;
  auto exponent = std::min<uint32_t>(st.failures, 16);
  auto delay = std::min<std::chrono::milliseconds>(
      reconnect_backoff_min * (int64_t{1} << exponent), reconnect_backoff_max);
  self->delayed_send(self, st.failures == 0 ? std::chrono::milliseconds(0) : delay,
                     client_reconnect_atom::value);
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
  self->monitor(init.gateway);
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    if (msg.source != st.gateway.address() || !st.connected)
      return;
    st.connected = false;
    st.gateway = nullptr;
    st.shared->set_disconnected();
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
      [self](client_call_atom, call_handle& h) {
        auto& st = self->state;
        auto c = std::move(h.ptr);
        if (!st.connected) {
          if (c->windowed)
            st.shared->release();
          c->fail(make_error(pool_errc::unavailable,
                             "not sent: lost the connection to " + st.shared->peer));
          return;
        }
        if (c->deadline <= steady::now()) {
          if (c->windowed)
            st.shared->release();
          ++st.shared->timed_out;
          c->fail(timeout_error());
          return;
        }
        auto id = st.next_id++;
        st.pending.emplace(id, c);
        st.deadlines.emplace(c->deadline, id);
        ++st.shared->sent;
        c->issue(self, id);
        schedule_expiry(self);
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
        schedule_expiry(self);
      },
      [self](client_close_atom) {
        fail_all(self, make_error(pool_errc::unavailable, "the client was closed"),
                 false);
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

  /// Hands a call to the client actor after taking a window credit; `done`
  /// runs on the calling thread if the call cannot be sent, else `on_send`
  /// (if any) runs on the calling thread right before the hand-over.
  template <class T>
  void submit(caf::message msg, callback<T> done, bool windowed,
              const send_hook& on_send = {}) {
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
    c->deadline = deadline;
    c->windowed = windowed;
    c->done = std::move(done);
    if (on_send)
      run_callback(on_send);
    caf::anon_send(actor, client_call_atom::value, call_handle{std::move(c)});
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
  impl_->submit<matrix>(
      request_message(embed_atom::value, std::move(text), std::move(task),
                      std::move(model), std::move(request_id)),
      first_row(std::move(done)), true);
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
