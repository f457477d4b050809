#include "pool/node.hpp"

#include <csignal>
#include <cstdio>
#include <ctime>
#include <sstream>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors.hpp"
#include "logging.hpp"
#include "pool/embedder.hpp"
#include "pool/protocol.hpp"

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
  auto model = make_embedder(cfg.model);
  if (!model) {
    log->error("event=model_failed error=\"{}\"", describe(model.error()));
    detail::shutdown_logging();
    return 2;
  }
  set_blas_threads(static_cast<int>(cfg.model.blas_threads));
  log_event("node_starting")
      .add("model", (*model)->name())
      .add("dim", static_cast<uint64_t>((*model)->dim()))
      .add("workers", cfg.pool.workers)
      .add("config_file", cfg.config_file.empty() ? "(none)" : cfg.config_file)
      .write(*log, spdlog::level::info);

  caf::actor_system_config sys_cfg;
  add_message_types(sys_cfg);
  sys_cfg.load<caf::io::middleman>();
  std::istringstream no_ini;
  if (auto err = sys_cfg.parse(cfg.caf_args, no_ini)) {
    log->error("event=config_failed error=\"{}\"", caf::actor_system_config::render(err));
    detail::shutdown_logging();
    return 2;
  }
  int exit_code = 0;
  {
    caf::actor_system sys{sys_cfg};
    detail::worker_config wcfg;
    wcfg.model = *model;
    wcfg.micro_batch_texts = cfg.pool.micro_batch_texts;
    wcfg.fault = cfg.fault;
    detail::supervisor_config scfg;
    scfg.pool = cfg.pool;
    scfg.heartbeat = cfg.heartbeat;
    scfg.log = cfg.log;
    scfg.model_name = (*model)->name();
    scfg.dim = static_cast<uint32_t>((*model)->dim());
    scfg.make_worker = [wcfg](caf::local_actor* self, uint32_t slot) {
      auto c = wcfg;
      c.slot = slot;
      return detail::spawn_worker(self->system(), std::move(c), true);
    };
    scfg.publish = true;
    scfg.host = cfg.node.host;
    scfg.port = cfg.node.port;
    auto supervisor = detail::spawn_supervisor(sys, std::move(scfg));
    caf::scoped_actor self{sys};
    self->monitor(supervisor);
    bool draining = false;
    bool done = false;
    while (!done) {
      self->receive(
          [&](caf::down_msg& msg) {
            done = true;
            if (msg.reason && msg.reason != caf::exit_reason::user_shutdown) {
              log->error("event=supervisor_failed reason=\"{}\"", describe(msg.reason));
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
        self->send(supervisor, drain_atom::value);
      }
    }
    detail::release_hung_workers();
  }
  log_event("node_stopped").add("exit_code", exit_code).write(*log, spdlog::level::info);
  detail::shutdown_logging();
  return exit_code;
}

}  // namespace pool
