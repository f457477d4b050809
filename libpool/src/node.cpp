#include "pool/node.hpp"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>
#include <random>
#include <sstream>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors.hpp"
#include "basp_guard.hpp"
#include "connection_guard.hpp"
#include "http_front.hpp"
#include "logging.hpp"
#include "memory_trim.hpp"
#include "metrics.hpp"
#include "peer_backlog.hpp"
#include "peer_guard.hpp"
#include "pool/embedder.hpp"
#include "pool/make_embedder.hpp"
#include "pool/protocol.hpp"
#include "pool/tls.hpp"
#include "tls_error_queue.hpp"

#include <unistd.h>

namespace pool {

namespace {

/// A shutdown or reopen signal delivered to a thread that does not block it
/// (0 = none since the last look).
std::atomic<int> caught_signal{0};

extern "C" void catch_signal(int sig) {
  caught_signal.store(sig);  // lock-free: async-signal-safe
}

/// Waits up to `timeout` for SIGINT, SIGTERM or SIGHUP. They are blocked in
/// every thread the node starts and taken here with sigtimedwait; threads
/// that started before the node could block them (OpenBLAS starts its pool
/// when the library loads) run `catch_signal` instead of the default action
/// (which would end the process), and the signal is picked up here too.
int wait_for_signal(const sigset_t& signals, std::chrono::milliseconds timeout) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  ts.tv_nsec = static_cast<long>((timeout.count() % 1000) * 1000000);
  int sig = sigtimedwait(&signals, nullptr, &ts);
  if (sig > 0)
    return sig;
  return caught_signal.exchange(0);
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

/// The host name plus a random suffix: unique enough for several worker
/// nodes on one host, and no hint at the process id (part of a CAF node id).
std::string default_node_name() {
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0)
    std::snprintf(host, sizeof(host), "node");
  std::random_device rd;
  char suffix[16];
  std::snprintf(suffix, sizeof(suffix), "%06x", rd() & 0xffffffu);
  return std::string{host} + "-" + suffix;
}

/// Checks the node-level rules that span several keys; an error names a key.
caf::error check_node_rules(const node_config& cfg) {
  if (cfg.node.role != "standalone" && cfg.node.role != "worker")
    return make_error(
        pool_errc::invalid_input,
        "node.role: expected standalone or worker, got \"" + cfg.node.role + "\"");
  if (cfg.node.role == "worker" && cfg.node.join.empty())
    return make_error(pool_errc::invalid_input,
                      "node.join: a worker node needs at least one HOST:PORT");
  if (auto err = validate_tls(cfg.tls))
    return err;
  if (cfg.http.enabled() && cfg.node.role != "standalone")
    return make_error(pool_errc::invalid_input,
                      "http.port: only a standalone node serves HTTP (node.role is " +
                          cfg.node.role + ")");
  if (cfg.http.enabled() && !is_loopback(cfg.http.host) && !cfg.node.allow_insecure)
    return make_error(pool_errc::invalid_input,
                      "http.host: binding " + cfg.http.host +
                          " (not loopback) is refused: the HTTP front has no TLS; set "
                          "node.allow-insecure = true to allow it");
  if (cfg.node.role == "standalone" && !is_loopback(cfg.node.host) &&
      !cfg.tls.enabled() && !cfg.node.allow_insecure)
    return make_error(pool_errc::invalid_input,
                      "node.host: binding " + cfg.node.host +
                          " (not loopback) without TLS is refused: set tls.certificate, "
                          "tls.key and tls.ca-file, or node.allow-insecure = true");
  return caf::none;
}

/// A model the node serves, loaded.
struct served_model {
  std::string name;  // what requests call it
  pool_section pool;
  std::shared_ptr<const embedder> model;
};

/// The weights and minimum workers of every model must fit the memory
/// budget: the supervisors reserve them unconditionally.
caf::error check_memory_budget(const std::vector<served_model>& models,
                               const detail::memory_budget& budget) {
  if (budget.limit() == 0)
    return caf::none;
  uint64_t needed = 0;
  uint32_t min_workers = 0;
  for (const auto& m : models) {
    auto limits = resolve_worker_limits(m.pool);
    if (!limits)
      return limits.error();
    min_workers += limits->min;
    needed += m.model->weights_bytes() +
              uint64_t{limits->min} * m.model->worker_bytes(m.pool.micro_batch_texts);
  }
  if (needed <= budget.limit())
    return caf::none;
  constexpr uint64_t mib = 1024 * 1024;
  return make_error(pool_errc::invalid_input,
                    "pool.memory-budget: " + std::to_string(budget.limit() / mib) +
                        " MiB cannot hold the weights of " +
                        std::to_string(models.size()) + " model(s) and their " +
                        std::to_string(min_workers) + " minimum worker(s) (" +
                        std::to_string((needed + mib - 1) / mib) + " MiB estimated)");
}

/// The supervisor config of one served model.
detail::supervisor_config model_supervisor_config(
    const node_config& cfg, const served_model& m,
    std::shared_ptr<detail::memory_budget> budget,
    std::shared_ptr<detail::metrics_registry> metrics) {
  detail::worker_config wcfg;
  wcfg.model = m.model;
  wcfg.metrics = metrics->model(m.name);
  wcfg.micro_batch_texts = m.pool.micro_batch_texts;
  wcfg.chunk_time_budget = cfg.heartbeat.interval / 4;
  wcfg.inline_compute = m.pool.inline_compute;
  wcfg.fault = cfg.fault;
  detail::supervisor_config scfg;
  scfg.pool = m.pool;
  scfg.heartbeat = cfg.heartbeat;
  scfg.cluster = cfg.cluster;
  scfg.log = cfg.log;
  scfg.model_name = m.name;
  scfg.metrics = std::move(metrics);
  scfg.dim = static_cast<uint32_t>(m.model->dim());
  scfg.tasks = m.model->tasks();
  scfg.weights_bytes = m.model->weights_bytes();
  scfg.worker_bytes = m.model->worker_bytes(m.pool.micro_batch_texts);
  scfg.budget = std::move(budget);
  wcfg.max_jobs = m.pool.embed_queue_capacity + m.pool.batch_queue_capacity;
  scfg.make_worker = [wcfg](caf::local_actor* self, uint32_t slot) {
    auto c = wcfg;
    c.slot = slot;
    // Only its supervisor may hand it work and stop it.
    auto supervisor = self->address();
    c.owner = supervisor;
    c.accepts = [supervisor](const caf::strong_actor_ptr& sender) {
      return sender && caf::actor_cast<caf::actor_addr>(sender) == supervisor;
    };
    return detail::spawn_worker(self->system(), std::move(c), true);
  };
  return scfg;
}

const char* signal_name(int sig) {
  return sig == SIGINT    ? "SIGINT"
         : sig == SIGTERM ? "SIGTERM"
         : sig == SIGHUP  ? "SIGHUP"
                          : "signal";
}

using detail::log_event;

/// Why the node does not start: the event it logs (at error level, with
/// `error` = `why` added last) and whether `why` is printed on stderr too.
struct refusal {
  log_event event;
  std::string why;
  bool print = true;
};

/// The one way out of a start that cannot go on: logs the refusal (when
/// `log` is set, i.e. logging is up), prints "embedpool-node: WHY" on stderr
/// (when asked), closes the log and returns 2, run_node's exit code for a
/// configuration error.
int refuse(const std::shared_ptr<spdlog::logger>& log, refusal r) {
  if (log)
    r.event.add("error", r.why).write(*log, spdlog::level::err);
  if (r.print)
    std::fprintf(stderr, "embedpool-node: %s\n", r.why.c_str());
  detail::shutdown_logging();
  return 2;
}

/// Blocks the shutdown signals and SIGHUP (reopen the log file) in the
/// calling thread, and so in every thread it starts after; the main thread
/// takes them with sigtimedwait (see wait_for_signal for threads started
/// earlier). Ignores SIGPIPE. Returns the set to wait for.
sigset_t take_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  struct sigaction catcher {};
  catcher.sa_handler = catch_signal;
  sigemptyset(&catcher.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP})
    sigaction(sig, &catcher, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  return signals;
}

/// Raises the descriptor limit as far as the kernel allows (every connection
/// costs one) and logs the outcome.
void raise_and_log_fd_limit(spdlog::logger& log) {
  auto fds = detail::raise_fd_limit();
  log_event("fd_limit")
      .add("soft_before", fds.soft_before)
      .add("soft", fds.soft)
      .add("hard", fds.hard)
      .add("error", fds.error == 0 ? "none" : std::strerror(fds.error))
      .write(log, fds.error == 0 ? spdlog::level::info : spdlog::level::warn);
}

/// Checks the rules that span several keys and parses node.join into
/// `supervisors`; warns about an insecure bind.
std::optional<refusal> check_config(
    const node_config& cfg, spdlog::logger& log,
    std::vector<std::pair<std::string, uint16_t>>& supervisors) {
  if (auto err = check_node_rules(cfg))
    return refusal{log_event("config_refused"), describe(err)};
  for (auto& entry : cfg.node.join) {
    auto ep = parse_host_port(entry, "node.join");
    if (!ep)
      return refusal{log_event("config_refused"), describe(ep.error())};
    supervisors.push_back(*ep);
  }
  if (cfg.node.role == "standalone" && !is_loopback(cfg.node.host) && !cfg.tls.enabled())
    log_event("insecure_bind")
        .add("host", cfg.node.host)
        .add("warning",
             "BASP without TLS on a non-loopback address: any peer that "
             "reaches the port can use and disrupt this node")
        .write(log, spdlog::level::warn);
  return std::nullopt;
}

/// Loads the models the node serves into `served`: the default model first,
/// then (standalone only: a worker node lends workers of the default model
/// only) every [models.NAME]. Refuses a model that fails to load and a name
/// used twice.
std::optional<refusal> load_models(const node_config& cfg,
                                   std::vector<served_model>& served) {
  served.push_back(served_model{default_model_name(cfg), cfg.pool, nullptr});
  if (cfg.node.role == "standalone")
    for (const auto& m : cfg.models)
      served.push_back(served_model{m.name, m.pool, nullptr});
  for (size_t i = 0; i < served.size(); ++i) {
    auto model = make_embedder(i == 0 ? cfg.model : cfg.models[i - 1].model);
    if (!model) {
      auto why = (i == 0 ? std::string{} : "models." + served[i].name + ": ") +
                 describe(model.error());
      return refusal{log_event("model_failed").add("model", served[i].name), why};
    }
    served[i].model = *model;
    if (served[i].name.empty())
      served[i].name = (*model)->name();
  }
  for (size_t i = 1; i < served.size(); ++i)
    if (served[i].name == served.front().name)
      return refusal{log_event("config_refused"),
                     "models.names: \"" + served[i].name +
                         "\" is also the default model's name; set model.name"};
  return std::nullopt;
}

/// Logs what the node is about to serve: one node_starting line, then one
/// model_loaded line per model.
void log_models(const node_config& cfg, const std::vector<served_model>& served,
                spdlog::logger& log) {
  const auto& model = served.front().model;
  log_event("node_starting")
      .add("model", model->name())
      .add("dim", static_cast<uint64_t>(model->dim()))
      .add("workers", cfg.pool.workers)
      .add("models", static_cast<uint64_t>(served.size()))
      .add("memory_budget_mib", cfg.pool.memory_budget_mib)
      .add("config_file", cfg.config_file.empty() ? "(none)" : cfg.config_file)
      .write(log, spdlog::level::info);
  for (const auto& m : served)
    log_event("model_loaded")
        .add("model", m.name)
        .add("embedder", m.model->name())
        .add("dim", static_cast<uint64_t>(m.model->dim()))
        .add("workers", m.pool.workers)
        .add("weights_bytes", static_cast<uint64_t>(m.model->weights_bytes()))
        .add("worker_bytes",
             static_cast<uint64_t>(m.model->worker_bytes(m.pool.micro_batch_texts)))
        .write(log, spdlog::level::info);
}

/// Bounds what CAF reads from a peer. CAF 0.17 would read any payload a BASP
/// header announces (up to 4 GiB per connection). A standalone node bounds
/// it by the largest request its pool settings accept plus a lent worker's
/// largest reply, with 1 MiB to spare. A worker node only talks to the
/// supervisor it joined: no bound.
void set_basp_limits(const node_config& cfg, const std::vector<served_model>& served,
                     spdlog::logger& log) {
  if (cfg.node.role == "standalone") {
    uint64_t largest = 0;
    for (const auto& m : served)
      largest = std::max<uint64_t>(
          largest, uint64_t{m.pool.max_batch_items} * (m.pool.max_text_bytes + 16) +
                       uint64_t{m.pool.max_batch_items} * m.model->dim() * sizeof(float));
    auto limit = std::max<uint64_t>(largest + 1024 * 1024, 8 * 1024 * 1024);
    detail::set_max_frame_bytes(
        static_cast<uint32_t>(std::min<uint64_t>(limit, UINT32_MAX)));
  }
  detail::set_max_unread_bytes(uint64_t{cfg.node.max_unread_mib} << 20);
  detail::set_max_inbox_bytes(uint64_t{cfg.node.max_inbox_mib} << 20);
  log_event("basp_limits")
      .add("max_frame_bytes", detail::max_frame_bytes())
      .add("max_message_depth", detail::default_max_message_depth)
      .add("guard", detail::basp_guard_bound())
      .add("max_unread_bytes_per_peer", detail::max_unread_bytes())
      .add("max_inbox_bytes", detail::max_inbox_bytes())
      .add("unread_guard", detail::peer_backlog_bound())
      .write(log, spdlog::level::info);
}

/// The CAF system's configuration: message types, the middleman, TLS and
/// the caf.* arguments. A bad argument is logged, not printed.
std::optional<refusal> configure_actor_system(const node_config& cfg,
                                              caf::actor_system_config& sys_cfg,
                                              spdlog::logger& log) {
  add_message_types(sys_cfg);
  sys_cfg.load<caf::io::middleman>();
  if (cfg.tls.enabled()) {
    enable_tls(sys_cfg, cfg.tls);
    log_event("tls_enabled")
        .add("error_queue_guard", detail::tls_error_queue_guard_bound())
        .write(log, spdlog::level::info);
  }
  std::istringstream no_ini;
  if (auto err = sys_cfg.parse(cfg.caf_args, no_ini))
    return refusal{log_event("config_failed"), caf::actor_system_config::render(err),
                   false};
  return std::nullopt;
}

/// Everything the running node's actors share.
struct node_shared {
  std::shared_ptr<detail::memory_budget> budget;
  std::shared_ptr<detail::metrics_registry> metrics;
  /// Set only on SIGINT/SIGTERM: no message can start a drain.
  std::shared_ptr<std::atomic<bool>> drain_signal;
};

/// Spawns the node's root actor: the supervisor of every served model (with
/// its gateway, published on node.host:node.port), or on a worker node the
/// lender of workers to `supervisors`.
caf::actor spawn_root(caf::actor_system& sys, const node_config& cfg,
                      const std::vector<served_model>& served,
                      const std::vector<std::pair<std::string, uint16_t>>& supervisors,
                      const node_shared& shared, spdlog::logger& log) {
  // CAF's own named actors would take orders from any peer (ConfigServ
  // stores whatever it is sent): a node needs neither.
  sys.registry().erase(caf::atom("ConfigServ"));
  sys.registry().erase(caf::atom("SpawnServ"));
  if (cfg.node.role == "worker") {
    detail::worker_config wcfg;
    wcfg.model = served.front().model;
    wcfg.metrics = shared.metrics->model(served.front().name);
    wcfg.micro_batch_texts = cfg.pool.micro_batch_texts;
    // Lent workers are pinged by a peer's supervisor: the cluster's nodes
    // share heartbeat.interval (README, "Cluster").
    wcfg.chunk_time_budget = cfg.heartbeat.interval / 4;
    wcfg.inline_compute = cfg.pool.inline_compute;
    wcfg.fault = cfg.fault;
    wcfg.max_jobs = cfg.pool.embed_queue_capacity + cfg.pool.batch_queue_capacity;
    detail::lender_config lcfg;
    lcfg.supervisors = supervisors;
    lcfg.node_name = cfg.node.name.empty() ? default_node_name() : cfg.node.name;
    lcfg.workers = cfg.pool.workers;
    lcfg.worker = wcfg;
    lcfg.tls = cfg.tls.enabled();
    lcfg.leave_timeout = cfg.pool.drain_timeout;
    lcfg.drain_signal = shared.drain_signal;
    log_event("worker_node_starting")
        .add("node", lcfg.node_name)
        .add("supervisors", static_cast<uint64_t>(supervisors.size()))
        .write(log, spdlog::level::info);
    return detail::spawn_lender(sys, std::move(lcfg));
  }
  detail::root_config rcfg;
  for (const auto& model : served)
    rcfg.models.push_back(
        model_supervisor_config(cfg, model, shared.budget, shared.metrics));
  rcfg.status_max_age = cfg.status.max_age;
  // One bound on request bytes for the whole node, all models.
  rcfg.bytes = std::make_shared<detail::byte_budget>(cfg.pool.max_queued_bytes_mib << 20);
  rcfg.metrics = shared.metrics;
  rcfg.drain_signal = shared.drain_signal;
  rcfg.host = cfg.node.host;
  rcfg.port = cfg.node.port;
  rcfg.tls = cfg.tls.enabled();
  return caf::actor_cast<caf::actor>(detail::spawn_root(sys, std::move(rcfg)));
}

/// Starts the HTTP front of `root` on http.host:http.port and sets `port` to
/// the port it listens on. If it cannot listen, logs and prints why, stops
/// `root` and returns null.
std::unique_ptr<detail::http_front> start_http(caf::actor_system& sys, caf::actor root,
                                               const node_config& cfg,
                                               const std::vector<served_model>& served,
                                               const node_shared& shared,
                                               spdlog::logger& log, uint16_t& port) {
  detail::http_front_config hcfg;
  hcfg.http = cfg.http;
  hcfg.request_timeout = cfg.pool.request_timeout + std::chrono::seconds(5);
  hcfg.model = served.front().model;
  hcfg.model_name = served.front().name;
  for (size_t i = 0; i < served.size(); ++i) {
    const auto& mc = i == 0 ? cfg.model : cfg.models[i - 1].model;
    hcfg.models.push_back(detail::http_model{served[i].name, served[i].model,
                                             served[i].pool.max_batch_items,
                                             mc.matryoshka, mc.truncate});
  }
  hcfg.metrics = shared.metrics;
  // Only a standalone node serves HTTP: its top actor is the root.
  auto http = std::make_unique<detail::http_front>(
      sys, caf::actor_cast<detail::root_interface>(root), std::move(hcfg));
  auto listening = http->start();
  if (!listening) {
    auto why = describe(listening.error());
    log_event("http_failed").add("error", why).write(log, spdlog::level::err);
    std::fprintf(stderr, "embedpool-node: %s\n", why.c_str());
    caf::anon_send_exit(root, caf::exit_reason::user_shutdown);
    return nullptr;
  }
  port = *listening;
  return http;
}

/// Runs until `root` is down. The first SIGINT/SIGTERM starts a drain, a
/// second one exits at once (status 1); SIGHUP reopens the log file. Returns
/// true if `root` went down for another reason than a shutdown.
bool serve_until_down(caf::actor_system& sys, caf::actor root, const sigset_t& signals,
                      const node_config& cfg, std::atomic<bool>& drain_signal,
                      spdlog::logger& log) {
  caf::scoped_actor self{sys};
  self->monitor(root);
  bool draining = false;
  bool failed = false;
  bool done = false;
  while (!done) {
    self->receive(
        [&](caf::down_msg& msg) {
          done = true;
          if (msg.reason && msg.reason != caf::exit_reason::user_shutdown) {
            log_event("node_failed")
                .add("reason", describe(msg.reason))
                .write(log, spdlog::level::err);
            failed = true;
          }
        },
        caf::after(std::chrono::milliseconds(0)) >> [] {});
    if (done)
      break;
    int sig = wait_for_signal(signals, std::chrono::milliseconds(50));
    if (sig == 0)
      continue;
    if (sig == SIGHUP) {
      // External log rotation moved the file: write to a new one.
      if (auto err = detail::reopen_log_file(); !err.empty())
        log_event("log_reopen_failed")
            .add("file", cfg.log.file)
            .add("error", err)
            .write(log, spdlog::level::err);
      else
        log_event("log_reopened")
            .add("signal", signal_name(sig))
            .add("file", cfg.log.file)
            .write(log, spdlog::level::info);
      continue;
    }
    if (draining) {
      log_event("forced_exit")
          .add("signal", signal_name(sig))
          .write(log, spdlog::level::warn);
      detail::shutdown_logging();
      std::_Exit(1);
    }
    draining = true;
    log_event("signal_received")
        .add("signal", signal_name(sig))
        .write(log, spdlog::level::info);
    drain_signal.store(true);
    self->send(root, drain_atom::value);
  }
  return failed;
}

/// Runs the loaded node until it stops: the actor system, the root actor,
/// the HTTP front, the memory trimmer and the idle-connection reaper.
/// Returns the exit code: 0 after a clean drain, 1 if the node failed, 2 if
/// the HTTP front could not start.
int run_actor_system(caf::actor_system_config& sys_cfg, const node_config& cfg,
                     const std::vector<served_model>& served,
                     const std::vector<std::pair<std::string, uint16_t>>& supervisors,
                     std::shared_ptr<detail::memory_budget> budget,
                     const sigset_t& signals, spdlog::logger& log) {
  int exit_code = 0;
  caf::actor_system sys{sys_cfg};
  node_shared shared{std::move(budget), std::make_shared<detail::metrics_registry>(),
                     std::make_shared<std::atomic<bool>>(false)};
  auto root = spawn_root(sys, cfg, served, supervisors, shared, log);
  std::unique_ptr<detail::http_front> http;
  uint16_t http_port = 0;
  if (cfg.http.enabled()) {
    http = start_http(sys, root, cfg, served, shared, log, http_port);
    if (!http)
      exit_code = 2;
  }
  // Hands memory freed after a burst back to the kernel within a second.
  detail::memory_trimmer trimmer{std::chrono::seconds(1), 16 * 1024 * 1024};
  // Accepted connections silent for the connection timeout are closed, also
  // those CAF's broker never times out (no complete BASP header yet).
  std::unique_ptr<detail::idle_connection_reaper> reaper;
  auto idle_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
      caf::get_or(sys.config(), "middleman.connection-timeout", caf::timespan{0}));
  if (idle_timeout.count() > 0) {
    std::set<uint16_t> excluded;
    if (http_port != 0)
      excluded.insert(http_port);
    reaper = std::make_unique<detail::idle_connection_reaper>(idle_timeout, excluded);
  }
  if (serve_until_down(sys, root, signals, cfg, *shared.drain_signal, log))
    exit_code = 1;
  // The supervisor is gone: HTTP requests now get 503 at once; stop
  // serving before the actor system goes away.
  if (http)
    http->stop();
  detail::release_hung_workers();
  return exit_code;
}

}  // namespace

int run_node(const node_config& cfg) {
  auto signals = take_signals();
  // Request and reply buffers of 256 KiB and more get pages of their own,
  // returned when freed. Smaller ones (a reply of 64 rows of 768 floats, a
  // text at the default pool.max-text-bytes) are reused from the heap: with
  // pages of their own, every reply of a list or batch cost a munmap with a
  // TLB shootdown across the node's threads and page faults for the next.
  // The trimmer below returns the heap's free memory after a burst.
  detail::use_own_pages_for_large_buffers(256 * 1024);
  if (auto err = detail::setup_logging(cfg.log); !err.empty())
    return refuse(nullptr, refusal{log_event("logging_failed"), err});  // printed only
  auto log = detail::get_logger("node");
  raise_and_log_fd_limit(*log);
  std::vector<std::pair<std::string, uint16_t>> supervisors;
  if (auto r = check_config(cfg, *log, supervisors))
    return refuse(log, std::move(*r));
  std::vector<served_model> served;
  if (auto r = load_models(cfg, served))
    return refuse(log, std::move(*r));
  set_blas_threads(static_cast<int>(cfg.model.blas_threads));
  auto budget =
      std::make_shared<detail::memory_budget>(cfg.pool.memory_budget_mib * 1024 * 1024);
  if (cfg.node.role == "standalone")
    if (auto err = check_memory_budget(served, *budget))
      return refuse(log, refusal{log_event("config_refused"), describe(err)});
  log_models(cfg, served, *log);
  set_basp_limits(cfg, served, *log);
  caf::actor_system_config sys_cfg;
  if (auto r = configure_actor_system(cfg, sys_cfg, *log))
    return refuse(log, std::move(*r));
  auto exit_code = run_actor_system(sys_cfg, cfg, served, supervisors, std::move(budget),
                                    signals, *log);
  log_event("node_stopped").add("exit_code", exit_code).write(*log, spdlog::level::info);
  detail::shutdown_logging();
  return exit_code;
}

}  // namespace pool
