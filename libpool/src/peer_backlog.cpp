// Replaces caf::io::network::scribe_impl::flush, caf::io::network::stream::flush
// and caf::io::basp::routing_table::{add_direct, erase_direct} (see
// peer_backlog.hpp). libcaf_io calls the first through a vtable and the
// routing table's through the PLT, libcaf_openssl calls stream::flush through
// the PLT: all resolve to the executable's definitions below, which call
// CAF's own through dlsym(RTLD_NEXT).
#include "peer_backlog.hpp"

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include <sys/socket.h>

#include <caf/io/basp/routing_table.hpp>
#include <caf/io/network/scribe_impl.hpp>
#include <caf/io/network/stream.hpp>

#include "interpose.hpp"
#include "logging.hpp"

namespace pool::detail {

namespace {

constexpr const char* scribe_flush_symbol = "_ZN3caf2io7network11scribe_impl5flushEv";
constexpr const char* stream_flush_symbol =
    "_ZN3caf2io7network6stream5flushERKNS_13intrusive_ptrINS1_14stream_managerEEE";
constexpr const char* add_direct_symbol =
    "_ZN3caf2io4basp13routing_table10add_directERKNS0_17connection_handleERKNS_7node_"
    "idE";
constexpr const char* erase_direct_symbol =
    "_ZN3caf2io4basp13routing_table12erase_directERKNS0_17connection_handleE";

std::atomic<uint64_t> bound{0};
std::atomic<uint64_t> refusals{0};
std::atomic<uint64_t> closed{0};
std::atomic<uint64_t> passed{0};
/// Connections over their bound right now: peers are looked up only if > 0.
std::atomic<size_t> over_count{0};
/// Connections to shut down at their next write (disconnect_peer).
std::atomic<size_t> shut_pending{0};
std::atomic<uint64_t> dropped_closed{0};

/// What a peer sent that was dropped, in the current window.
struct drop_window {
  std::chrono::steady_clock::time_point start;
  uint64_t messages = 0;
  uint64_t bytes = 0;
  bool disconnected = false;
};

struct connection_state {
  caf::node_id node;  // none until the BASP handshake names the peer
  bool over = false;  // unwritten bytes above the bound
  bool shut = false;  // shut down; CAF closes it
};

/// Connections by handle id (the socket), and the direct one of each node.
/// Written on the multiplexer threads, read by actors that check a peer.
struct connection_table {
  std::mutex mtx;
  std::unordered_map<int64_t, connection_state> by_socket;
  std::unordered_map<caf::node_id, int64_t> by_node;
  std::unordered_map<caf::node_id, drop_window> drops;
  std::unordered_set<int64_t> shut_requested;
};

/// Never destroyed: multiplexer threads may flush during static destruction.
connection_table& table() {
  static auto* instance = new connection_table;
  return *instance;
}

void log_connection(const char* action, int64_t socket, const caf::node_id& node,
                    uint64_t unwritten, uint64_t limit) {
  log_event("peer_unread_bound")
      .add("action", action)
      .add("peer", node ? to_string(node) : std::string{"unknown"})
      .add("peer_address", socket_peer_address(static_cast<int>(socket)))
      .add("unread_bytes", unwritten)
      .add("limit", limit)
      .write(*get_logger("gateway"), spdlog::level::warn);
}

/// Called after a message was flushed to connection `socket`: `unwritten`
/// bytes of it wait behind the one write in progress.
void note_unwritten(int64_t socket, uint64_t unwritten) {
  if (shut_pending.load(std::memory_order_relaxed) > 0) {
    bool shut_now = false;
    {
      auto& tbl = table();
      std::lock_guard<std::mutex> guard{tbl.mtx};
      if (tbl.shut_requested.erase(socket) > 0) {
        shut_pending.fetch_sub(1, std::memory_order_relaxed);
        shut_now = true;
      }
    }
    if (shut_now) {
      // The multiplexer thread that owns the socket: see below.
      ::shutdown(static_cast<int>(socket), SHUT_RDWR);
      return;
    }
  }
  auto limit = bound.load(std::memory_order_relaxed);
  if (limit == 0)
    return;
  auto& tbl = table();
  if (unwritten <= limit) {
    if (over_count.load(std::memory_order_relaxed) == 0)
      return;
    std::lock_guard<std::mutex> guard{tbl.mtx};
    auto i = tbl.by_socket.find(socket);
    if (i != tbl.by_socket.end() && i->second.over) {
      i->second.over = false;
      i->second.shut = false;
      over_count.fetch_sub(1, std::memory_order_relaxed);
      if (!i->second.node)
        tbl.by_socket.erase(i);
    }
    return;
  }
  bool first = false;
  bool shut_now = false;
  caf::node_id node;
  {
    std::lock_guard<std::mutex> guard{tbl.mtx};
    auto& conn = tbl.by_socket[socket];
    if (!conn.over) {
      conn.over = true;
      first = true;
      over_count.fetch_add(1, std::memory_order_relaxed);
      passed.fetch_add(1, std::memory_order_relaxed);
    }
    if (!conn.shut && unwritten > unread_close_threshold(limit)) {
      conn.shut = true;
      shut_now = true;
      closed.fetch_add(1, std::memory_order_relaxed);
    }
    node = conn.node;
  }
  if (first)
    log_connection("refuse", socket, node, unwritten, limit);
  if (shut_now) {
    log_connection("close", socket, node, unwritten, limit);
    // On the multiplexer thread that owns the socket, so it is still this
    // connection's: CAF sees the error on its next write or read and closes
    // the connection, freeing its buffers.
    ::shutdown(static_cast<int>(socket), SHUT_RDWR);
  }
}

void remember(int64_t socket, const caf::node_id& node) {
  auto& tbl = table();
  std::lock_guard<std::mutex> guard{tbl.mtx};
  tbl.by_socket[socket].node = node;
  tbl.by_node[node] = socket;
}

void forget(int64_t socket) {
  auto& tbl = table();
  std::lock_guard<std::mutex> guard{tbl.mtx};
  auto i = tbl.by_socket.find(socket);
  if (i == tbl.by_socket.end())
    return;
  if (i->second.over)
    over_count.fetch_sub(1, std::memory_order_relaxed);
  auto j = tbl.by_node.find(i->second.node);
  if (j != tbl.by_node.end() && j->second == socket) {
    tbl.by_node.erase(j);
    tbl.drops.erase(i->second.node);
  }
  if (tbl.shut_requested.erase(socket) > 0)
    shut_pending.fetch_sub(1, std::memory_order_relaxed);
  tbl.by_socket.erase(i);
}

}  // namespace

void set_max_unread_bytes(uint64_t bytes) {
  bound = bytes;
}

uint64_t max_unread_bytes() {
  return bound.load();
}

uint64_t unread_close_threshold(uint64_t limit) {
  constexpr uint64_t mib = uint64_t{1} << 20;
  return limit + std::max(limit / 4, mib);
}

bool peer_over_unread_bound(const caf::node_id& peer) {
  if (over_count.load(std::memory_order_relaxed) == 0)
    return false;
  auto& tbl = table();
  std::lock_guard<std::mutex> guard{tbl.mtx};
  auto i = tbl.by_node.find(peer);
  if (i == tbl.by_node.end())
    return false;
  auto j = tbl.by_socket.find(i->second);
  return j != tbl.by_socket.end() && j->second.over;
}

std::string peer_address_of(const caf::node_id& peer) {
  int64_t socket = -1;
  {
    auto& tbl = table();
    std::lock_guard<std::mutex> guard{tbl.mtx};
    auto i = tbl.by_node.find(peer);
    if (i == tbl.by_node.end())
      return "unknown";
    socket = i->second;
  }
  return socket_peer_address(static_cast<int>(socket));
}

void note_dropped_from(const caf::node_id& peer, uint64_t bytes) {
  auto& tbl = table();
  auto now = std::chrono::steady_clock::now();
  int64_t socket = -1;
  drop_window seen;
  {
    std::lock_guard<std::mutex> guard{tbl.mtx};
    auto conn = tbl.by_node.find(peer);
    if (conn == tbl.by_node.end())
      return;  // not (or no longer) directly connected
    auto& w = tbl.drops[peer];
    if (now - w.start > dropped_window) {
      w.start = now;
      w.messages = 0;
      w.bytes = 0;
    }
    ++w.messages;
    w.bytes += bytes;
    if (w.disconnected ||
        (w.messages <= max_dropped_messages && w.bytes <= max_dropped_bytes))
      return;
    w.disconnected = true;
    socket = conn->second;
    if (tbl.shut_requested.insert(socket).second)
      shut_pending.fetch_add(1, std::memory_order_relaxed);
    dropped_closed.fetch_add(1, std::memory_order_relaxed);
    seen = w;
  }
  log_event("peer_disconnected")
      .add("reason", "dropped_messages")
      .add("peer", to_string(peer))
      .add("peer_address", socket_peer_address(static_cast<int>(socket)))
      .add("messages", seen.messages)
      .add("bytes", seen.bytes)
      .add("window_s", static_cast<int64_t>(dropped_window.count()))
      .write(*get_logger("gateway"), spdlog::level::warn);
}

uint64_t dropped_connections_closed() {
  return dropped_closed.load();
}

void count_unread_refusal() {
  refusals.fetch_add(1, std::memory_order_relaxed);
}

bool peer_backlog_bound() {
  return bound_to_us(scribe_flush_symbol) && bound_to_us(stream_flush_symbol) &&
         bound_to_us(add_direct_symbol) && bound_to_us(erase_direct_symbol);
}

uint64_t unread_refusals() {
  return refusals.load();
}

uint64_t unread_connections_closed() {
  return closed.load();
}

uint64_t unread_bound_passed() {
  return passed.load();
}

}  // namespace pool::detail

// Itanium C++ ABI: a member function is a function taking `this` first; a
// non-trivial return value comes back through a hidden pointer either way.

namespace caf::io::network {

void scribe_impl::flush() {
  using fn = void (*)(scribe_impl*);
  static const auto next =
      pool::detail::next_definition<fn>(pool::detail::scribe_flush_symbol);
  next(this);
  pool::detail::note_unwritten(hdl().id(), wr_buf().size());
}

void stream::flush(const manager_ptr& mgr) {
  using fn = void (*)(stream*, const manager_ptr&);
  static const auto next =
      pool::detail::next_definition<fn>(pool::detail::stream_flush_symbol);
  next(this, mgr);
  pool::detail::note_unwritten(fd(), wr_buf().size());
}

}  // namespace caf::io::network

namespace caf::io::basp {

void routing_table::add_direct(const connection_handle& hdl, const node_id& nid) {
  using fn = void (*)(routing_table*, const connection_handle&, const node_id&);
  static const auto next =
      pool::detail::next_definition<fn>(pool::detail::add_direct_symbol);
  next(this, hdl, nid);
  pool::detail::remember(hdl.id(), nid);
}

node_id routing_table::erase_direct(const connection_handle& hdl) {
  using fn = node_id (*)(routing_table*, const connection_handle&);
  static const auto next =
      pool::detail::next_definition<fn>(pool::detail::erase_direct_symbol);
  auto result = next(this, hdl);
  pool::detail::forget(hdl.id());
  return result;
}

}  // namespace caf::io::basp
