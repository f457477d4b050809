// embedpool-naive-node: the "before" of the overload benchmark. One plain CAF
// actor with CAF's ordinary unbounded mailbox, published on 127.0.0.1, answers
// the same protocol as a node's gateway — (embed, text [, task]) and
// (batch, texts [, task]) with the built-in hash model, sleeping
// --compute-delay per text like `fault.compute-delay` — with no credits, no
// pending bound and no deadline. Under overload its mailbox (and RSS) grows
// without limit. Not for production: it exists to be measured.
//
// usage: embedpool-naive-node [--port=P] [--compute-delay=10ms]
// Prints "event=listening port=N" on stdout once published; exits on
// SIGINT/SIGTERM.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <thread>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "pool/config.hpp"
#include "pool/embedder.hpp"
#include "pool/make_embedder.hpp"
#include "pool/error.hpp"
#include "pool/node_version.hpp"
#include "pool/protocol.hpp"

namespace {

struct naive_state {
  static inline const char* name = "embedpool.naive";
  std::shared_ptr<const pool::embedder> model;
  caf::timespan delay{0};
  uint64_t completed = 0;
};

using naive_actor = caf::stateful_actor<naive_state>;

pool::matrix embed_all(naive_actor* self, const std::vector<std::string>& texts,
                       const std::string& task) {
  auto& st = self->state;
  if (st.delay.count() > 0)
    std::this_thread::sleep_for(st.delay * static_cast<int64_t>(texts.size()));
  pool::matrix m;
  m.rows = static_cast<uint32_t>(texts.size());
  m.dim = static_cast<uint32_t>(st.model->dim());
  m.values.resize(static_cast<size_t>(m.rows) * m.dim);
  std::vector<std::string_view> views(texts.begin(), texts.end());
  st.model->embed(views, task, m.values.data());
  ++st.completed;
  return m;
}

caf::result<pool::matrix> embed_one(naive_actor* self, std::string& text,
                                    const std::string& task) {
  if (text.empty())
    return pool::make_error(pool::pool_errc::invalid_input, "text is empty");
  return embed_all(self, {std::move(text)}, task);
}

caf::result<pool::matrix> embed_many(naive_actor* self, std::vector<std::string>& texts,
                                     const std::string& task) {
  for (const auto& t : texts)
    if (t.empty())
      return pool::make_error(pool::pool_errc::invalid_input, "text is empty");
  return embed_all(self, texts, task);
}

caf::behavior naive_behavior(naive_actor* self,
                             std::shared_ptr<const pool::embedder> model,
                             caf::timespan delay) {
  self->state.model = std::move(model);
  self->state.delay = delay;
  return {
      [=](pool::embed_atom, std::string& text) { return embed_one(self, text, ""); },
      [=](pool::embed_atom, std::string& text, std::string& task) {
        return embed_one(self, text, task);
      },
      [=](pool::batch_atom, std::vector<std::string>& texts) {
        return embed_many(self, texts, "");
      },
      [=](pool::batch_atom, std::vector<std::string>& texts, std::string& task) {
        return embed_many(self, texts, task);
      },
      // The handshake pool::client sends when it connects.
      [=](pool::hello_atom,
          uint32_t protocol) -> caf::result<pool::hello_atom, uint32_t, std::string> {
        if (auto err = pool::check_peer_protocol(protocol))
          return err;
        return {pool::hello_atom::value, pool::protocol_version, pool::version_string()};
      },
      [=](pool::status_atom) {
        // Answered only when the actor gets to it, behind everything queued.
        pool::pool_status st;
        st.model = self->state.model->name();
        st.dim = static_cast<uint32_t>(self->state.model->dim());
        st.policy = "unbounded";
        pool::worker_status w;
        w.node = "local";
        w.state = "ready";
        w.queue_depth = self->mailbox().size();
        w.completed = self->state.completed;
        st.workers.push_back(w);
        return st;
      },
  };
}

bool parse_delay(const std::string& s, caf::timespan& out) {
  char* end = nullptr;
  auto v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || !(v >= 0))
    return false;
  std::string unit = end;
  double ns;
  if (unit == "ms")
    ns = v * 1e6;
  else if (unit == "s")
    ns = v * 1e9;
  else if (unit == "us")
    ns = v * 1e3;
  else
    return false;
  out = caf::timespan{static_cast<int64_t>(ns)};
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  uint16_t port = 0;
  caf::timespan delay = std::chrono::milliseconds(10);
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--version") {
      std::fputs(pool::node_version_text("embedpool-naive-node").c_str(), stdout);
      return 0;
    }
    if (arg.rfind("--port=", 0) == 0) {
      char* end = nullptr;
      auto p = std::strtoul(arg.c_str() + 7, &end, 10);
      if (*end != '\0' || p > 65535) {
        std::fprintf(stderr, "embedpool-naive-node: bad %s\n", arg.c_str());
        return 2;
      }
      port = static_cast<uint16_t>(p);
    } else if (arg.rfind("--compute-delay=", 0) == 0) {
      if (!parse_delay(arg.substr(16), delay)) {
        std::fprintf(stderr, "embedpool-naive-node: bad %s (e.g. 10ms)\n", arg.c_str());
        return 2;
      }
    } else {
      std::fprintf(stderr,
                   "usage: embedpool-naive-node [--port=P] [--compute-delay=10ms]\n");
      return arg == "--help" || arg == "-h" ? 0 : 2;
    }
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto model = pool::make_embedder(pool::model_config{});
  if (!model) {
    std::fprintf(stderr, "embedpool-naive-node: %s\n",
                 pool::describe(model.error()).c_str());
    return 2;
  }
  caf::actor_system_config cfg;
  pool::add_message_types(cfg);
  cfg.load<caf::io::middleman>();
  std::istringstream no_ini;
  std::vector<std::string> args = {"--scheduler.max-threads=2",
                                   "--middleman.heartbeat-interval=1s"};
  if (auto err = cfg.parse(args, no_ini)) {
    std::fprintf(stderr, "embedpool-naive-node: %s\n",
                 caf::actor_system_config::render(err).c_str());
    return 2;
  }
  caf::actor_system sys{cfg};
  auto actor = sys.spawn<caf::detached>(naive_behavior, *model, delay);
  auto bound = sys.middleman().publish(actor, port, "127.0.0.1");
  if (!bound) {
    std::fprintf(stderr, "embedpool-naive-node: cannot publish: %s\n",
                 caf::actor_system_config::render(bound.error()).c_str());
    caf::anon_send_exit(actor, caf::exit_reason::kill);
    return 2;
  }
  std::printf("event=listening port=%u\n", static_cast<unsigned>(*bound));
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  // Exit without draining the (possibly huge) mailbox.
  std::fflush(stdout);
  std::_Exit(0);
}
