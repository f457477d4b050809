// A C++ peer of a node: connect, then make typed requests. Every call returns
// (or calls back with) exactly one result or error, never hangs past its
// timeout. Errors: the `pool` category for the node's answers and for the
// client's own verdicts (`deadline_exceeded` when a call's timeout passes,
// `unavailable` when the connection to the node is lost or the client is
// closed); other categories only for unexpected CAF failures.
//
// Client-side credit window: at most `client_options::window` embed/batch
// calls are in flight at once. A further call waits in the calling thread
// until an answer returns a credit (or its timeout passes). This is "the
// sender waits" end to end; the node's network reader never blocks.
//
// Connecting never hangs: each node gets `connect_timeout` to complete its
// handshake (TCP, TLS and BASP), then the next of `fallbacks` is tried.
//
// A call that never reached the network (the client was disconnected or
// closed when it was made) fails with `unavailable` and a message starting
// with "not sent: ", so callers can tell it from a call lost in flight.
//
// Lost connection: the client monitors the node's gateway. When the node
// vanishes (process killed, connection dropped, gateway gone), every pending
// call fails at once with `unavailable`. Without `reconnect`, every later call
// fails immediately the same way (make a new client); with it, the client
// connects again to the next reachable node of its list.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include <caf/expected.hpp>
#include <caf/message.hpp>
#include <caf/timespan.hpp>

#include "pool/config.hpp"
#include "pool/protocol.hpp"

namespace pool {

struct client_options {
  std::string host = "127.0.0.1";
  uint16_t port = 4242;
  /// More nodes as "HOST:PORT": `connect` tries host:port first, then these in
  /// order, and uses the first that answers.
  std::vector<std::string> fallbacks;
  /// Mutual TLS (`[tls]` keys); on when `tls.certificate` is set.
  tls_section tls;
  /// Per-call timeout, waiting for a window credit included; a call without an
  /// answer by then fails with `deadline_exceeded` (checked every 10 ms). A
  /// pending call costs memory only until it is settled, whatever the timeout.
  caf::timespan timeout = std::chrono::seconds(60);
  /// Bound on connecting to one node, TCP, TLS and BASP handshakes included.
  /// A node that has not answered by then (frozen, overloaded, or not an
  /// embedpool node) counts as unreachable and the next endpoint is tried.
  caf::timespan connect_timeout = std::chrono::seconds(5);
  /// What happens after the node is lost. Pending calls fail at once with
  /// `unavailable` either way. false (default): the client stays
  /// disconnected. true: it connects again, trying the endpoints in turn
  /// (host:port, then `fallbacks`, starting after the lost one) every 100 ms
  /// doubling to 2 s, until one answers; calls made meanwhile fail at once
  /// with `unavailable`, and `connected()` turns true again once it is back.
  bool reconnect = false;
  /// Most embed/batch calls in flight at once; further calls wait for a
  /// credit. 0 disables the window (no limit: only for load generators that
  /// bound their own outstanding calls). `status()` never counts.
  uint32_t window = 64;
  /// Most embed calls sent together in one message (`(embed, texts, task,
  /// model)`, see pool/protocol.hpp) when calls queue up: an embed call
  /// without a request id goes out at once while fewer than 4 messages of
  /// embed calls await an answer; otherwise it waits for the next answer (at
  /// most 10 ms when none comes) or for `coalesce` calls to gather, and goes
  /// in a list with the calls of the same task and model that waited with it.
  /// So a lone caller never waits, and under load one message carries many
  /// calls.
  /// Each call still gets its own answer or error: a list the node refuses
  /// for its input as a whole (`invalid_input`, `too_large`: longer than its
  /// `pool.max-batch-items`, or one text the model refused) or fails with
  /// `worker_failed` (after the node's retries) goes again call by call,
  /// once, and after a too long list later lists keep to the limit the node
  /// named. Small lists keep several workers busy: a list is one job for one
  /// worker. 0 or 1: every call in a message of its own. Against a node that
  /// does not know lists (an earlier release), the client finds out on the
  /// first and sends every call alone.
  uint32_t coalesce = 32;
  /// Extra `--section.key=value` options for the client's CAF actor system
  /// (defaults: pool::client_caf_defaults() in pool/caf_defaults.hpp, i.e.
  /// `scheduler.max-threads=2`, `middleman.heartbeat-interval=1s` and the
  /// scheduler's idle settings); an option given here replaces its default.
  std::vector<std::string> caf_args;
};

/// Counters of one client, read with `client::stats()`.
struct client_stats {
  uint64_t sent = 0;       // requests handed to the network
  uint64_t answered = 0;   // calls settled by an answer from the node
  uint64_t timed_out = 0;  // calls settled by the client timeout
  uint64_t lost = 0;       // calls settled `unavailable` by a lost connection
  /// Answers that arrived for calls already settled (by timeout or loss);
  /// they are dropped, so every call still completes exactly once.
  uint64_t late_answers = 0;
  /// Embed calls sent in a list with others (`client_options::coalesce`),
  /// and the lists that carried them (`sent - listed + lists` messages).
  uint64_t listed = 0;
  uint64_t lists = 0;
  uint32_t in_flight = 0;   // embed/batch calls holding a window credit
  bool connected = true;    // false once the node's gateway is gone (until reconnected)
  uint64_t reconnects = 0;  // successful reconnections (`client_options::reconnect`)
  std::string node;         // "host:port" of the node connected to (or last lost)
};

template <class T>
using callback = std::function<void(caf::expected<T>)>;

/// Told when a call is handed on to the network; see the `embed_async`
/// overload that takes one.
using send_hook = std::function<void()>;

/// Thread-safety: every member function may be called from any number of
/// threads at once (the window bounds how many calls proceed). Callbacks run
/// on one of the client's internal threads, one at a time, or — when a call
/// fails before it is sent (no credit within the timeout, disconnected) — on
/// the calling thread before the call returns. A callback must not block and
/// must not call this client (a call could wait for a credit that only the
/// callback's thread can return). A `send_hook` always runs on the calling
/// thread, under the same rules.
///
/// Owns its own CAF actor system; destroying it fails every pending call with
/// `unavailable` and disconnects. Do not destroy it while other threads are
/// inside its member functions.
class client {
 public:
  /// Connects to the gateway at opts.host:opts.port; `unavailable` if the node
  /// cannot be reached, `invalid_input` for bad options.
  static caf::expected<std::unique_ptr<client>> connect(const client_options& opts);

  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  // `model` names one of the models the node serves (its status lists them
  // in `models`); "" = the node's default model. An unknown name is answered
  // `invalid_input` naming it. `request_id` (1 to 128 bytes of letters,
  // digits and `._:-`; others are answered `invalid_input`) names the request
  // in the node's log lines about it; "" = the node makes one.

  // -- blocking ---------------------------------------------------------------

  /// One text -> its embedding.
  caf::expected<std::vector<float>> embed(const std::string& text,
                                          const std::string& task = "",
                                          const std::string& model = "",
                                          const std::string& request_id = "");

  /// Many texts in ONE batch message -> a row-major matrix, row i for texts[i].
  caf::expected<matrix> embed_batch(const std::vector<std::string>& texts,
                                    const std::string& task = "",
                                    const std::string& model = "",
                                    const std::string& request_id = "");

  /// The pool status of a model (outside the window).
  caf::expected<pool_status> status(const std::string& model = "");

  /// The node's metrics as Prometheus text exposition (outside the window).
  caf::expected<std::string> metrics();

  // -- callbacks (waits only for a window credit) ------------------------------

  /// Sends `(embed, text, task [, model [, request_id]])`; `done` is called
  /// exactly once.
  void embed_async(std::string text, callback<std::vector<float>> done,
                   std::string task = "", std::string model = "",
                   std::string request_id = "");

  /// Sends `(batch, texts, task [, model [, request_id]])`; `done` is called
  /// exactly once.
  void embed_batch_async(std::vector<std::string> texts, callback<matrix> done,
                         std::string task = "", std::string model = "",
                         std::string request_id = "");

  /// As above, and `on_send` marks the moment the request is handed on to the
  /// network, for callers that time requests (load generators): the time a
  /// call waits for a window credit is before it, the round trip after it.
  /// `on_send` runs at most once, on the calling thread, before this function
  /// returns: after the call has taken its credit, right before the request
  /// is passed to the client's internal actor that sends it, so always before
  /// `done` can run (the two never overlap). It does not run when the call
  /// fails before that point (no credit within the timeout, client
  /// disconnected or closed); then only `done` runs, with the error. A
  /// connection lost between `on_send` and the network still fails the call
  /// with a "not sent: " message. A call that waits to share a message with
  /// others (`client_options::coalesce`) waits after `on_send`: that wait is
  /// part of its round trip. `on_send` must not block and must not call
  /// this client; an exception escaping it is ignored. An empty `on_send` is
  /// the same as the overload without it.
  void embed_async(std::string text, callback<std::vector<float>> done, send_hook on_send,
                   std::string task = "", std::string model = "",
                   std::string request_id = "");

  /// `embed_batch_async` with `on_send`, as for `embed_async`.
  void embed_batch_async(std::vector<std::string> texts, callback<matrix> done,
                         send_hook on_send, std::string task = "", std::string model = "",
                         std::string request_id = "");

  /// Asks for a model's status (outside the window); `done` is called exactly once.
  void status_async(callback<pool_status> done, std::string model = "");

  // -- futures (waits only for a window credit) --------------------------------

  std::future<caf::expected<std::vector<float>>> embed_future(
      std::string text, std::string task = "", std::string model = "",
      std::string request_id = "");

  std::future<caf::expected<matrix>> embed_batch_future(std::vector<std::string> texts,
                                                        std::string task = "",
                                                        std::string model = "",
                                                        std::string request_id = "");

  // -- state ------------------------------------------------------------------

  client_stats stats() const;

  /// False once the connection to the node is lost (true again after a
  /// reconnection).
  bool connected() const;

  const client_options& options() const;

 private:
  struct impl;
  explicit client(std::unique_ptr<impl> ptr);
  std::unique_ptr<impl> impl_;
};

}  // namespace pool
