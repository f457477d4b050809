#include "pool/node.hpp"

#include <csignal>
#include <cstdio>
#include <ctime>
#include <random>
#include <sstream>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors.hpp"
#include "http_front.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "pool/embedder.hpp"
#include "pool/protocol.hpp"
#include "pool/tls.hpp"

#include <unistd.h>

namespace pool {

namespace {

/// Waits up to `timeout` for SIGINT or SIGTERM (blocked in every thread).
int wait_for_signal(const sigset_t& signals, std::chrono::milliseconds timeout) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  ts.tv_nsec = static_cast<long>((timeout.count() % 1000) * 1000000);
  int sig = sigtimedwait(&signals, nullptr, &ts);
  return sig > 0 ? sig : 0;
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
  wcfg.fault = cfg.fault;
  detail::supervisor_config scfg;
  scfg.pool = m.pool;
  scfg.heartbeat = cfg.heartbeat;
  scfg.cluster = cfg.cluster;
  scfg.log = cfg.log;
  scfg.model_name = m.name;
  scfg.metrics = std::move(metrics);
  scfg.dim = static_cast<uint32_t>(m.model->dim());
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
  return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "signal";
}

}  // namespace

int run_node(const node_config& cfg) {
  using detail::log_event;
  // Block the shutdown signals before any thread exists; the main thread
  // takes them with sigtimedwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  if (auto err = detail::setup_logging(cfg.log); !err.empty()) {
    std::fprintf(stderr, "embedpool-node: %s\n", err.c_str());
    return 2;
  }
  auto log = detail::get_logger("node");
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

  caf::actor_system_config sys_cfg;
  add_message_types(sys_cfg);
  sys_cfg.load<caf::io::middleman>();
  if (cfg.tls.enabled())
    enable_tls(sys_cfg, cfg.tls);
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
    if (cfg.http.enabled()) {
      detail::http_front_config hcfg;
      hcfg.http = cfg.http;
      hcfg.request_timeout = cfg.pool.request_timeout + std::chrono::seconds(5);
      hcfg.model = model;
      hcfg.model_name = served.front().name;
      hcfg.metrics = metrics;
      http = std::make_unique<detail::http_front>(sys, root, std::move(hcfg));
      if (auto port = http->start(); !port) {
        log->error("event=http_failed error=\"{}\"", describe(port.error()));
        std::fprintf(stderr, "embedpool-node: %s\n", describe(port.error()).c_str());
        http.reset();
        caf::anon_send_exit(root, caf::exit_reason::user_shutdown);
        exit_code = 2;
      }
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
