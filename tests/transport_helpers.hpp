// Helpers of the transport tests: a private CA made with the `openssl`
// command, a worker node process, and raw TCP sockets on 127.0.0.1.
#pragma once

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "process_helpers.hpp"

namespace pool::test {

/// A CA and certificates signed by it ("node", "client", "worker"), plus a
/// self-signed "rogue" one, made at construction in a temporary directory.
struct test_pki {
  temp_dir dir;
  std::string path(const std::string& name) const { return (dir.path() / name).string(); }

  void run(const std::vector<std::string>& argv) {
    auto r = run_command(argv, std::chrono::seconds(60));
    if (!r.status.exited || r.status.code != 0)
      throw std::runtime_error("openssl failed: " + r.err);
  }

  void self_signed(const std::string& name) {
    run({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", path(name + ".key"), "-out",
         path(name + ".pem"), "-days", "2", "-subj", "/CN=" + name});
  }

  void signed_by_ca(const std::string& name) {
    run({"/usr/bin/openssl", "req", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", path(name + ".key"), "-out",
         path(name + ".csr"), "-subj", "/CN=" + name});
    run({"/usr/bin/openssl", "x509", "-req", "-in", path(name + ".csr"), "-CA",
         path("ca.pem"), "-CAkey", path("ca.key"), "-CAcreateserial", "-out",
         path(name + ".pem"), "-days", "2"});
  }

  test_pki() {
    self_signed("ca");
    signed_by_ca("node");
    signed_by_ca("client");
    signed_by_ca("worker");
    self_signed("rogue");
  }

  std::vector<std::string> args(const std::string& who) const {
    return {"--tls.certificate=" + path(who + ".pem"), "--tls.key=" + path(who + ".key"),
            "--tls.ca-file=" + path("ca.pem")};
  }
};

/// An `embedpool-node --node.role=worker` process joined to a head node.
class worker_node {
 public:
  worker_node(uint16_t head_port, const std::string& name,
              const std::vector<std::string>& extra) {
    log_ = (dir_.path() / "worker.log").string();
    std::vector<std::string> argv = {EMBEDPOOL_NODE_BIN, "--node.role=worker",
                                     "--node.join=127.0.0.1:" + std::to_string(head_port),
                                     "--node.name=" + name, "--log.file=" + log_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    redirections io;
    io.stdout_file = (dir_.path() / "stdout.txt").string();
    io.stderr_file = (dir_.path() / "stderr.txt").string();
    proc_.emplace(argv, io);
  }

  bool wait_for_log(const std::string& needle, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (log().find(needle) != std::string::npos)
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  child_process& process() { return *proc_; }
  std::string log() const { return slurp(log_); }
  /// What the process wrote to stderr (a sanitizer's report, for one).
  std::string err() const { return slurp(dir_.path() / "stderr.txt"); }

 private:
  temp_dir dir_;
  std::string log_;
  std::optional<child_process> proc_;
};

/// A TCP socket connected to 127.0.0.1:port (blocking), closed on destruction.
class raw_socket {
 public:
  explicit raw_socket(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0)
      throw std::runtime_error("socket failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd_);
      throw std::runtime_error("connect to 127.0.0.1:" + std::to_string(port) +
                               " failed: " + std::strerror(errno));
    }
  }
  ~raw_socket() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  raw_socket(const raw_socket&) = delete;
  raw_socket& operator=(const raw_socket&) = delete;

  int fd() const { return fd_; }

  /// Sends all of `bytes`; false if the peer closed or reset the connection.
  bool send_all(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      auto n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0)
        return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  /// Reads and drops what the peer sent; true once the peer closed (EOF or
  /// error). Waits at most `wait` for something to happen.
  bool closed_by_peer(std::chrono::milliseconds wait) {
    if (eof_)
      return true;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0)
      return false;
    char buf[4096];
    for (;;) {
      auto n = ::recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
      if (n > 0)
        continue;
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        eof_ = true;
      return eof_;
    }
  }

 private:
  int fd_ = -1;
  bool eof_ = false;
};

/// A listening socket on 127.0.0.1 that never accepts: connects succeed (the
/// kernel completes them into the backlog) but nothing is ever answered.
class silent_listener {
 public:
  silent_listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = 0;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(fd_, 64) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      throw std::runtime_error("cannot open a listening socket");
    port_ = ntohs(addr.sin_port);
  }
  ~silent_listener() { ::close(fd_); }
  silent_listener(const silent_listener&) = delete;
  silent_listener& operator=(const silent_listener&) = delete;

  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

/// VmRSS of `pid` in KiB, or -1.
inline long rss_kb(pid_t pid) {
  auto text = slurp("/proc/" + std::to_string(pid) + "/status");
  auto at = text.find("VmRSS:");
  if (at == std::string::npos)
    return -1;
  return std::strtol(text.c_str() + at + 6, nullptr, 10);
}

}  // namespace pool::test
