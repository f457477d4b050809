// A request's id and the peer that sent it, as carried from the gateway to
// the supervisor for the log lines about the request (request_log.hpp).
// Plain data: no CAF actor or logging header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <caf/node_id.hpp>

namespace pool::detail {

/// Longest request id a peer may send (bytes of [A-Za-z0-9._:-]).
constexpr size_t max_request_id_bytes = 128;

/// True for a request id a peer may send: 1 to 128 bytes of letters, digits
/// and `._:-` (printable in any log format, no quoting needed).
bool valid_request_id(const std::string& id);

/// Where a request came from. Cheap to copy when the peer sent no id: the
/// gateway's own ids are a number, turned into text only when logged.
struct request_origin {
  std::string id;       // the peer's own id; empty = `seq` names it
  uint64_t seq = 0;     // the gateway's number for a request without an id
  caf::node_id node;    // the sending node; none for HTTP and local actors
  std::string address;  // an HTTP client's "ip:port"; empty otherwise
  bool http = false;    // sent by the node's HTTP front for a client
};

/// A fresh gateway number for a request without an id (thread-safe).
uint64_t next_request_seq();

/// The request's id as logged: the peer's own, or "<node prefix>-<seq>"
/// (8 hex digits random per process, then the number).
std::string request_id_text(const request_origin& origin);

}  // namespace pool::detail
