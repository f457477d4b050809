#include "connection_guard.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "logging.hpp"
#include "tcp_sockets.hpp"

namespace pool::detail {

namespace {

uint64_t limit_value(rlim_t x) {
  return x == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(x);
}

}  // namespace

fd_limit raise_fd_limit() {
  fd_limit result;
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    result.error = errno;
    return result;
  }
  result.soft_before = limit_value(lim.rlim_cur);
  result.hard = limit_value(lim.rlim_max);
  if (lim.rlim_cur != lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0)
      result.error = errno;
  }
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0)
    result.soft = limit_value(lim.rlim_cur);
  return result;
}

idle_connection_reaper::idle_connection_reaper(std::chrono::milliseconds timeout,
                                               std::set<uint16_t> excluded)
    : timeout_(timeout), excluded_(std::move(excluded)), dir_(opendir("/proc/self/fd")) {
  thread_ = std::thread{[this] { run(); }};
}

idle_connection_reaper::~idle_connection_reaper() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    stop_ = true;
  }
  stop_cv_.notify_all();
  thread_.join();
  if (dir_ != nullptr)
    closedir(static_cast<DIR*>(dir_));
}

void idle_connection_reaper::run() {
  auto period = std::clamp(timeout_ / 4, std::chrono::milliseconds(50),
                           std::chrono::milliseconds(1000));
  std::unique_lock<std::mutex> guard{mtx_};
  while (!stop_cv_.wait_for(guard, period, [this] { return stop_; })) {
    guard.unlock();
    auto n = sweep();
    if (n > 0)
      log_event("idle_connections_closed")
          .add("count", n)
          .add("total", closed_.load())
          .add("timeout_ms", static_cast<int64_t>(timeout_.count()))
          .write(*get_logger("node"), spdlog::level::warn);
    guard.lock();
  }
}

uint64_t idle_connection_reaper::sweep() {
  struct candidate {
    int fd;
    ino_t inode;
    uint16_t port;
  };
  std::vector<candidate> sockets;
  std::set<uint16_t> listening;
  // The directory stays open for the reaper's life: at the descriptor limit,
  // when it matters most, opening it again would fail.
  auto* dir = static_cast<DIR*>(dir_);
  if (dir == nullptr)
    return 0;
  rewinddir(dir);
  int own = dirfd(dir);
  while (auto* entry = readdir(dir)) {
    char* end = nullptr;
    auto fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == own)
      continue;
    auto inode = socket_inode(static_cast<int>(fd));
    if (inode == 0)
      continue;
    auto port = tcp_local_port(static_cast<int>(fd));
    if (port == 0)
      continue;
    int accepting = 0;
    socklen_t len = sizeof(accepting);
    if (getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) ==
            0 &&
        accepting != 0) {
      listening.insert(port);
      continue;
    }
    sockets.push_back({static_cast<int>(fd), inode, port});
  }
  uint64_t closed = 0;
  for (const auto& s : sockets) {
    if (listening.count(s.port) == 0 || excluded_.count(s.port) != 0)
      continue;  // an outgoing connection, or a port the reaper leaves alone
    tcp_info info{};
    socklen_t len = sizeof(info);
    if (getsockopt(s.fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0)
      continue;
    if (info.tcpi_state != TCP_ESTABLISHED ||
        info.tcpi_last_data_recv < static_cast<uint32_t>(timeout_.count()))
      continue;
    // The descriptor may have been closed and reused since it was listed.
    if (socket_inode(s.fd) != s.inode)
      continue;
    if (shutdown(s.fd, SHUT_RDWR) == 0)
      ++closed;
  }
  closed_ += closed;
  return closed;
}

}  // namespace pool::detail
