#include "pool/node.hpp"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
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

/// The supervisor config of one served model (no publishing, no other models).
detail::supervisor_config model_supervisor_config(
    const node_config& cfg, const served_model& m,
    std::shared_ptr<detail::memory_budget> budget,
    std::shared_ptr<detail::metrics_registry> metrics) {
  detail::worker_config wcfg;
  wcfg.model = m.model;
  wcfg.metrics = metrics->model(m.name);
  wcfg.micro_batch_texts = m.pool.micro_batch_texts;
  wcfg.chunk_time_budget = cfg.heartbeat.interval / 4;
  wcfg.fault = cfg.fault;
  detail::supervisor_config scfg;
  scfg.pool = m.pool;
  scfg.heartbeat = cfg.heartbeat;
  scfg.cluster = cfg.cluster;
  scfg.status_max_age = cfg.status.max_age;
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

}  // namespace

int run_node(const node_config& cfg) {
  using detail::log_event;
  // Block the shutdown signals and SIGHUP (reopen the log file) before the
  // node starts a thread; the main thread takes them with sigtimedwait
  // (see wait_for_signal for threads started earlier).
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
  // Request and reply buffers of 64 KiB and more (a text at the default
  // pool.max-text-bytes) get pages of their own, returned when freed.
  detail::use_own_pages_for_large_buffers(64 * 1024);

  if (auto err = detail::setup_logging(cfg.log); !err.empty()) {
    std::fprintf(stderr, "embedpool-node: %s\n", err.c_str());
    return 2;
  }
  auto log = detail::get_logger("node");
  // Every connection costs a descriptor: take all the kernel allows us.
  auto fds = detail::raise_fd_limit();
  log_event("fd_limit")
      .add("soft_before", fds.soft_before)
      .add("soft", fds.soft)
      .add("hard", fds.hard)
      .add("error", fds.error == 0 ? "none" : std::strerror(fds.error))
      .write(*log, fds.error == 0 ? spdlog::level::info : spdlog::level::warn);
  if (auto err = check_node_rules(cfg)) {
    log->error("event=config_refused error=\"{}\"", describe(err));
    std::fprintf(stderr, "embedpool-node: %s\n", describe(err).c_str());
    detail::shutdown_logging();
    return 2;
  }
  std::vector<std::pair<std::string, uint16_t>> supervisors;
  for (auto& entry : cfg.node.join) {
    auto ep = parse_host_port(entry, "node.join");
    if (!ep) {
      std::fprintf(stderr, "embedpool-node: %s\n", describe(ep.error()).c_str());
      detail::shutdown_logging();
      return 2;
    }
    supervisors.push_back(*ep);
  }
  if (cfg.node.role == "standalone" && !is_loopback(cfg.node.host) && !cfg.tls.enabled())
    log_event("insecure_bind")
        .add("host", cfg.node.host)
        .add("warning",
             "BASP without TLS on a non-loopback address: any peer that "
             "reaches the port can use and disrupt this node")
        .write(*log, spdlog::level::warn);
  // A worker node lends workers of the default model only.
  std::vector<served_model> served;
  served.push_back(served_model{default_model_name(cfg), cfg.pool, nullptr});
  if (cfg.node.role == "standalone")
    for (const auto& m : cfg.models)
      served.push_back(served_model{m.name, m.pool, nullptr});
  for (size_t i = 0; i < served.size(); ++i) {
    auto model = make_embedder(i == 0 ? cfg.model : cfg.models[i - 1].model);
    if (!model) {
      auto why = (i == 0 ? std::string{} : "models." + served[i].name + ": ") +
                 describe(model.error());
      log->error("event=model_failed model={} error=\"{}\"", served[i].name, why);
      std::fprintf(stderr, "embedpool-node: %s\n", why.c_str());
      detail::shutdown_logging();
      return 2;
    }
    served[i].model = *model;
    if (served[i].name.empty())
      served[i].name = (*model)->name();
  }
  for (size_t i = 1; i < served.size(); ++i)
    if (served[i].name == served.front().name) {
      auto why = "models.names: \"" + served[i].name +
                 "\" is also the default model's name; set model.name";
      log->error("event=config_refused error=\"{}\"", why);
      std::fprintf(stderr, "embedpool-node: %s\n", why.c_str());
      detail::shutdown_logging();
      return 2;
    }
  const auto& model = served.front().model;
  set_blas_threads(static_cast<int>(cfg.model.blas_threads));
  auto budget =
      std::make_shared<detail::memory_budget>(cfg.pool.memory_budget_mib * 1024 * 1024);
  if (cfg.node.role == "standalone") {
    if (auto err = check_memory_budget(served, *budget)) {
      log->error("event=config_refused error=\"{}\"", describe(err));
      std::fprintf(stderr, "embedpool-node: %s\n", describe(err).c_str());
      detail::shutdown_logging();
      return 2;
    }
  }
  log_event("node_starting")
      .add("model", model->name())
      .add("dim", static_cast<uint64_t>(model->dim()))
      .add("workers", cfg.pool.workers)
      .add("models", static_cast<uint64_t>(served.size()))
      .add("memory_budget_mib", cfg.pool.memory_budget_mib)
      .add("config_file", cfg.config_file.empty() ? "(none)" : cfg.config_file)
      .write(*log, spdlog::level::info);
  for (const auto& m : served)
    log_event("model_loaded")
        .add("model", m.name)
        .add("embedder", m.model->name())
        .add("dim", static_cast<uint64_t>(m.model->dim()))
        .add("workers", m.pool.workers)
        .add("weights_bytes", static_cast<uint64_t>(m.model->weights_bytes()))
        .add("worker_bytes",
             static_cast<uint64_t>(m.model->worker_bytes(m.pool.micro_batch_texts)))
        .write(*log, spdlog::level::info);

  // CAF 0.17 would read any payload a BASP header announces (up to 4 GiB per
  // connection). A standalone node bounds it by the largest request its pool
  // settings accept plus a lent worker's largest reply, with 1 MiB to spare.
  // A worker node only talks to the supervisor it joined: no bound.
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
      .write(*log, spdlog::level::info);

  caf::actor_system_config sys_cfg;
  add_message_types(sys_cfg);
  sys_cfg.load<caf::io::middleman>();
  if (cfg.tls.enabled()) {
    enable_tls(sys_cfg, cfg.tls);
    log_event("tls_enabled")
        .add("error_queue_guard", detail::tls_error_queue_guard_bound())
        .write(*log, spdlog::level::info);
  }
  std::istringstream no_ini;
  if (auto err = sys_cfg.parse(cfg.caf_args, no_ini)) {
    log->error("event=config_failed error=\"{}\"", caf::actor_system_config::render(err));
    detail::shutdown_logging();
    return 2;
  }
  int exit_code = 0;
  {
    caf::actor_system sys{sys_cfg};
    auto metrics = std::make_shared<detail::metrics_registry>();
    detail::worker_config wcfg;
    wcfg.model = model;
    wcfg.metrics = metrics->model(served.front().name);
    wcfg.micro_batch_texts = cfg.pool.micro_batch_texts;
    // Lent workers are pinged by a peer's supervisor: the cluster's nodes
    // share heartbeat.interval (README, "Cluster").
    wcfg.chunk_time_budget = cfg.heartbeat.interval / 4;
    wcfg.fault = cfg.fault;
    wcfg.max_jobs = cfg.pool.embed_queue_capacity + cfg.pool.batch_queue_capacity;
    // CAF's own named actors would take orders from any peer (ConfigServ
    // stores whatever it is sent): a node needs neither.
    sys.registry().erase(caf::atom("ConfigServ"));
    sys.registry().erase(caf::atom("SpawnServ"));
    // Set only here, on SIGINT/SIGTERM: no message can start a drain.
    auto drain_signal = std::make_shared<std::atomic<bool>>(false);
    auto scfg = model_supervisor_config(cfg, served.front(), budget, metrics);
    scfg.drain_signal = drain_signal;
    // One bound on request bytes for the whole node, all models.
    scfg.bytes =
        std::make_shared<detail::byte_budget>(cfg.pool.max_queued_bytes_mib << 20);
    for (size_t i = 0; i < served.size(); ++i) {
      scfg.model_names.push_back(served[i].name);
      if (i > 0)
        scfg.other_models.push_back(
            model_supervisor_config(cfg, served[i], budget, metrics));
    }
    scfg.publish = true;
    scfg.host = cfg.node.host;
    scfg.port = cfg.node.port;
    scfg.tls = cfg.tls.enabled();
    scfg.metrics = metrics;
    caf::actor root;  // the supervisor, or the lender of a worker node
    if (cfg.node.role == "worker") {
      detail::lender_config lcfg;
      lcfg.supervisors = supervisors;
      lcfg.node_name = cfg.node.name.empty() ? default_node_name() : cfg.node.name;
      lcfg.workers = cfg.pool.workers;
      lcfg.worker = wcfg;
      lcfg.tls = cfg.tls.enabled();
      lcfg.leave_timeout = cfg.pool.drain_timeout;
      lcfg.drain_signal = drain_signal;
      log_event("worker_node_starting")
          .add("node", lcfg.node_name)
          .add("supervisors", static_cast<uint64_t>(supervisors.size()))
          .write(*log, spdlog::level::info);
      root = detail::spawn_lender(sys, std::move(lcfg));
    } else {
      root = detail::spawn_supervisor(sys, std::move(scfg));
    }
    std::unique_ptr<detail::http_front> http;
    uint16_t http_port = 0;
    if (cfg.http.enabled()) {
      detail::http_front_config hcfg;
      hcfg.http = cfg.http;
      hcfg.request_timeout = cfg.pool.request_timeout + std::chrono::seconds(5);
      hcfg.model = model;
      hcfg.model_name = served.front().name;
      for (size_t i = 0; i < served.size(); ++i) {
        const auto& mc = i == 0 ? cfg.model : cfg.models[i - 1].model;
        hcfg.models.push_back(detail::http_model{served[i].name, served[i].model,
                                                 served[i].pool.max_batch_items,
                                                 mc.matryoshka, mc.truncate});
      }
      hcfg.metrics = metrics;
      http = std::make_unique<detail::http_front>(sys, root, std::move(hcfg));
      auto port = http->start();
      http_port = port ? *port : 0;
      if (!port) {
        log->error("event=http_failed error=\"{}\"", describe(port.error()));
        std::fprintf(stderr, "embedpool-node: %s\n", describe(port.error()).c_str());
        http.reset();
        caf::anon_send_exit(root, caf::exit_reason::user_shutdown);
        exit_code = 2;
      }
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
    caf::scoped_actor self{sys};
    self->monitor(root);
    bool draining = false;
    bool done = false;
    while (!done) {
      self->receive(
          [&](caf::down_msg& msg) {
            done = true;
            if (msg.reason && msg.reason != caf::exit_reason::user_shutdown) {
              log->error("event=node_failed reason=\"{}\"", describe(msg.reason));
              exit_code = 1;
            }
          },
          caf::after(std::chrono::milliseconds(0)) >> [] {});
      if (done)
        break;
      if (int sig = wait_for_signal(signals, std::chrono::milliseconds(50))) {
        if (sig == SIGHUP) {
          // External log rotation moved the file: write to a new one.
          if (auto err = detail::reopen_log_file(); !err.empty())
            log_event("log_reopen_failed")
                .add("file", cfg.log.file)
                .add("error", err)
                .write(*log, spdlog::level::err);
          else
            log_event("log_reopened")
                .add("signal", signal_name(sig))
                .add("file", cfg.log.file)
                .write(*log, spdlog::level::info);
          continue;
        }
        if (draining) {
          log_event("forced_exit")
              .add("signal", signal_name(sig))
              .write(*log, spdlog::level::warn);
          detail::shutdown_logging();
          std::_Exit(1);
        }
        draining = true;
        log_event("signal_received")
            .add("signal", signal_name(sig))
            .write(*log, spdlog::level::info);
        drain_signal->store(true);
        self->send(root, drain_atom::value);
      }
    }
    // The supervisor is gone: HTTP requests now get 503 at once; stop
    // serving before the actor system goes away.
    if (http)
      http->stop();
    detail::release_hung_workers();
  }
  log_event("node_stopped").add("exit_code", exit_code).write(*log, spdlog::level::info);
  detail::shutdown_logging();
  return exit_code;
}

}  // namespace pool
