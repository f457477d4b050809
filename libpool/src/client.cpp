#include "pool/client.hpp"

#include <mutex>
#include <sstream>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

namespace pool {

namespace {

/// CAF defaults for client processes: few threads, and heartbeats so that a
/// node with middleman.connection-timeout keeps an idle client connected.
const std::vector<std::string> default_client_caf_args = {
    "--scheduler.max-threads=2",
    "--middleman.heartbeat-interval=1s",
};

caf::error map_error(caf::error err) {
  if (err == caf::sec::request_timeout)
    return make_error(pool_errc::deadline_exceeded,
                      "no answer within the client timeout");
  return err;
}

}  // namespace

struct client::impl {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<caf::scoped_actor> self;
  caf::actor gateway;
  caf::timespan timeout;
  std::mutex mtx;

  template <class T, class... Ts>
  caf::expected<T> call(Ts&&... xs) {
    std::lock_guard<std::mutex> guard{mtx};
    caf::expected<T> result{caf::error{}};
    (*self)
        ->request(gateway, timeout, std::forward<Ts>(xs)...)
        .receive([&](T& value) { result = std::move(value); },
                 [&](caf::error& err) { result = map_error(std::move(err)); });
    return result;
  }
};

client::client(std::unique_ptr<impl> ptr) : impl_(std::move(ptr)) {}

client::~client() {
  if (impl_) {
    impl_->gateway = nullptr;
    impl_->self.reset();
    impl_->sys.reset();
  }
}

caf::expected<std::unique_ptr<client>> client::connect(const client_options& opts) {
  auto ptr = std::make_unique<impl>();
  add_message_types(ptr->cfg);
  ptr->cfg.load<caf::io::middleman>();
  auto args = default_client_caf_args;
  args.insert(args.end(), opts.caf_args.begin(), opts.caf_args.end());
  std::istringstream no_ini;
  if (auto err = ptr->cfg.parse(args, no_ini))
    return err;
  ptr->timeout = opts.timeout;
  ptr->sys = std::make_unique<caf::actor_system>(ptr->cfg);
  auto gw = ptr->sys->middleman().remote_actor(opts.host, opts.port);
  if (!gw)
    return make_error(pool_errc::unavailable,
                      "cannot connect to " + opts.host + ":" + std::to_string(opts.port) +
                          ": " + caf::actor_system_config::render(gw.error()));
  ptr->gateway = std::move(*gw);
  ptr->self = std::make_unique<caf::scoped_actor>(*ptr->sys);
  return std::unique_ptr<client>{new client(std::move(ptr))};
}

caf::expected<std::vector<float>> client::embed(const std::string& text,
                                                const std::string& task) {
  return impl_->call<std::vector<float>>(embed_atom::value, text, task);
}

caf::expected<matrix> client::embed_batch(const std::vector<std::string>& texts,
                                          const std::string& task) {
  return impl_->call<matrix>(batch_atom::value, texts, task);
}

caf::expected<pool_status> client::status() {
  return impl_->call<pool_status>(status_atom::value);
}

}  // namespace pool
