// A hostile peer for tests: speaks BASP (CAF 0.17, version 3) over a plain TCP
// socket to 127.0.0.1, frame by frame, with no middleman behind it. It can
// address any actor id of a node, claim any source actor, and records the
// source actor of every message the node sends it.
//
// Not thread-safe; one peer per thread. Every read is bounded by a deadline.
#pragma once

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/io/middleman.hpp>

#include "pool/protocol.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace pool::test {

/// A raw peer's own actor system: the pool's type registry, and a node id of
/// its own (its middleman only provides that id: the peer speaks BASP by
/// hand).
struct peer_system {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  peer_system() {
    pool::add_message_types(cfg);
    cfg.load<caf::io::middleman>();
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

/// BASP's operations (caf/io/basp/message_type.hpp).
enum class basp_op : uint8_t {
  server_handshake = 0x00,
  client_handshake = 0x01,
  direct_message = 0x02,
  routed_message = 0x03,
  monitor_message = 0x04,
  down_message = 0x05,
  heartbeat = 0x06,
};

/// A BASP header as it crosses the wire (32 bytes, big-endian fields).
struct basp_header {
  basp_op op = basp_op::heartbeat;
  uint8_t flags = 0;
  uint32_t payload_len = 0;
  uint64_t operation_data = 0;
  uint64_t source_actor = 0;
  uint64_t dest_actor = 0;
};

/// A message the node sent to this peer.
struct received_message {
  uint64_t source_actor = 0;  // 0 = no actor (e.g. CAF's bounce of a request)
  uint64_t dest_actor = 0;
  uint64_t message_id = 0;
  uint8_t flags = 0;     // 0x01: addressed to a named actor (CAF's own)
  caf::message content;  // empty if it could not be read

  bool is_response() const { return (message_id >> 63) != 0; }
};

class raw_basp_peer {
 public:
  static constexpr size_t header_size = 32;

  /// `sys` provides the type registry for (de)serializing message contents
  /// and the node id this peer claims.
  explicit raw_basp_peer(caf::actor_system& sys) : sys_(sys) {}

  /// Claims node id `claimed` instead (e.g. several peers in one process).
  raw_basp_peer(caf::actor_system& sys, caf::node_id claimed)
      : sys_(sys), claimed_(std::move(claimed)) {}

  ~raw_basp_peer() { close(); }

  raw_basp_peer(const raw_basp_peer&) = delete;
  raw_basp_peer& operator=(const raw_basp_peer&) = delete;

  /// Connects to 127.0.0.1:port; with `handshake`, reads the server handshake
  /// and answers it. Throws on failure.
  void connect(uint16_t port, bool handshake = true,
               std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0)
      throw std::runtime_error("socket failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
      throw std::runtime_error("connect failed");
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!handshake)
      return;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    basp_header hdr;
    std::vector<char> payload;
    if (!read_frame(hdr, payload, deadline) || hdr.op != basp_op::server_handshake)
      throw std::runtime_error("no server handshake");
    caf::binary_deserializer source{sys_, payload};
    std::vector<std::string> app_ids;
    std::set<std::string> iface;
    if (auto err = source(server_node_, app_ids, published_actor_, iface))
      throw std::runtime_error("bad server handshake: " + sys_.render(err));
    std::vector<char> hs;
    caf::binary_serializer sink{sys_, hs};
    auto self_node = node();
    if (auto err = sink(self_node))
      throw std::runtime_error("cannot write client handshake");
    write_frame({basp_op::client_handshake, 0, 0, 0, 0, 0}, hs);
  }

  /// The node id this peer claims: its actor system's, or (a system without
  /// a middleman has none) one made up from the process id.
  caf::node_id node() const {
    if (claimed_)
      return claimed_;
    if (sys_.node())
      return sys_.node();
    static const auto made_up = caf::make_node_id(
        static_cast<uint32_t>(::getpid()), "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed");
    return made_up ? *made_up : caf::node_id{};
  }

  /// The node's id and its published actor (from the server handshake).
  const caf::node_id& server_node() const { return server_node_; }
  uint64_t published_actor() const { return published_actor_; }

  /// Sends `content` to actor `dest` of the node, claiming to come from actor
  /// `source` of this peer (0 = no sender); `request_id` > 0 makes it a
  /// request the node should answer.
  void send(uint64_t dest, const caf::message& content, uint64_t source = 0,
            uint64_t request_id = 0) {
    std::vector<char> payload;
    caf::binary_serializer sink{sys_, payload};
    std::vector<caf::strong_actor_ptr> stages;
    auto msg = content;
    if (auto err = sink(stages, msg))
      throw std::runtime_error("cannot serialize message: " + sys_.render(err));
    write_frame({basp_op::direct_message, 0, 0, request_id, source, dest}, payload);
  }

  /// Sends a BASP heartbeat (what CAF peers send with
  /// middleman.heartbeat-interval set).
  void send_heartbeat() { write_frame({basp_op::heartbeat, 0, 0, 0, 0, 0}, {}); }

  /// Writes raw bytes (e.g. a lying header).
  bool write_raw(const std::vector<char>& bytes) { return write_all(bytes); }

  /// Reads frames until `deadline` (answering nothing); returns the messages
  /// the node sent. False in `open()` afterwards if the node closed the
  /// connection.
  std::vector<received_message> read_until(
      std::chrono::steady_clock::time_point deadline) {
    return read_messages(SIZE_MAX, deadline);
  }

  /// Reads frames until `n` messages (not heartbeats) arrived or `deadline`
  /// passed; returns them.
  std::vector<received_message> read_messages(
      size_t n, std::chrono::steady_clock::time_point deadline) {
    std::vector<received_message> result;
    basp_header hdr;
    std::vector<char> payload;
    while (result.size() < n && read_frame(hdr, payload, deadline)) {
      if (hdr.op != basp_op::direct_message && hdr.op != basp_op::routed_message)
        continue;
      received_message m;
      m.source_actor = hdr.source_actor;
      m.dest_actor = hdr.dest_actor;
      m.message_id = hdr.operation_data;
      m.flags = hdr.flags;
      caf::binary_deserializer source{sys_, payload};
      std::vector<caf::strong_actor_ptr> stages;
      if (hdr.op == basp_op::routed_message) {
        caf::node_id src, dst;
        if (source(src, dst))
          continue;
      }
      if (source(stages, m.content))
        m.content = caf::message{};
      result.push_back(std::move(m));
    }
    return result;
  }

  /// Reads and discards whatever has arrived, without blocking; false once
  /// the node closed the connection.
  bool discard_available() {
    char buf[65536];
    while (fd_ >= 0 && !closed_) {
      auto r = ::recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
      if (r > 0)
        continue;
      if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
        closed_ = true;
      break;
    }
    return open();
  }

  /// The socket, e.g. to poll it.
  int fd() const { return fd_; }

  /// False once the node closed the connection (or it failed).
  bool open() const { return fd_ >= 0 && !closed_; }

  void close() {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
  }

  /// Encodes a header as BASP writes it.
  static std::vector<char> encode(const basp_header& h) {
    std::vector<char> out;
    out.push_back(static_cast<char>(h.op));
    out.push_back(0);
    out.push_back(0);
    out.push_back(static_cast<char>(h.flags));
    put(out, h.payload_len, 4);
    put(out, h.operation_data, 8);
    put(out, h.source_actor, 8);
    put(out, h.dest_actor, 8);
    return out;
  }

 private:
  static void put(std::vector<char>& out, uint64_t x, int bytes) {
    for (int i = bytes - 1; i >= 0; --i)
      out.push_back(static_cast<char>((x >> (8 * i)) & 0xFF));
  }

  static uint64_t get(const unsigned char* p, int bytes) {
    uint64_t x = 0;
    for (int i = 0; i < bytes; ++i)
      x = (x << 8) | p[i];
    return x;
  }

  void write_frame(basp_header h, const std::vector<char>& payload) {
    h.payload_len = static_cast<uint32_t>(payload.size());
    auto bytes = encode(h);
    bytes.insert(bytes.end(), payload.begin(), payload.end());
    if (!write_all(bytes))
      closed_ = true;
  }

  /// Writes all of `bytes`; false once the node closed the connection (it
  /// sent its FIN, or reset it) or a write stalled for `write_stall_limit`.
  /// A node that closes a peer's connection may leave it with a closed
  /// receive window, so a blocking send would wait for the kernel's orphan
  /// timeout: poll for the FIN instead.
  bool write_all(const std::vector<char>& bytes) {
    size_t done = 0;
    auto stalled_since = std::chrono::steady_clock::now();
    while (done < bytes.size()) {
      auto n = ::send(fd_, bytes.data() + done, bytes.size() - done,
                      MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        done += static_cast<size_t>(n);
        stalled_since = std::chrono::steady_clock::now();
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        return false;
      if (std::chrono::steady_clock::now() - stalled_since > write_stall_limit)
        return false;
      pollfd p{fd_, POLLOUT | POLLRDHUP, 0};
      if (::poll(&p, 1, 100) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0)
        return false;
    }
    return true;
  }

  static constexpr std::chrono::seconds write_stall_limit{30};

  /// Reads exactly `n` bytes before `deadline`; false on timeout or close.
  bool read_exact(char* out, size_t n, std::chrono::steady_clock::time_point deadline) {
    size_t done = 0;
    while (done < n) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
      if (left <= 0)
        return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0)
        return false;
      auto r = ::recv(fd_, out + done, n - done, 0);
      if (r <= 0) {
        closed_ = true;
        return false;
      }
      done += static_cast<size_t>(r);
    }
    return true;
  }

  bool read_frame(basp_header& hdr, std::vector<char>& payload,
                  std::chrono::steady_clock::time_point deadline) {
    if (fd_ < 0 || closed_)
      return false;
    unsigned char raw[header_size];
    if (!read_exact(reinterpret_cast<char*>(raw), header_size, deadline))
      return false;
    hdr.op = static_cast<basp_op>(raw[0]);
    hdr.flags = raw[3];
    hdr.payload_len = static_cast<uint32_t>(get(raw + 4, 4));
    hdr.operation_data = get(raw + 8, 8);
    hdr.source_actor = get(raw + 16, 8);
    hdr.dest_actor = get(raw + 24, 8);
    if (hdr.payload_len > (64u << 20))
      return false;
    payload.resize(hdr.payload_len);
    // A frame once begun is read whole (a deadline passing in its middle would
    // lose the stream's framing), within 30 s more.
    auto payload_deadline =
        std::max(deadline, std::chrono::steady_clock::now() + std::chrono::seconds(30));
    return hdr.payload_len == 0 ||
           read_exact(payload.data(), payload.size(), payload_deadline);
  }

  caf::actor_system& sys_;
  caf::node_id claimed_;
  int fd_ = -1;
  bool closed_ = false;
  caf::node_id server_node_;
  uint64_t published_actor_ = 0;
};

}  // namespace pool::test
