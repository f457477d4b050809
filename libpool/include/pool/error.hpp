// The `pool` error category: every failure a peer can receive from a node.
#pragma once

#include <cstdint>
#include <string>

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/optional.hpp>

namespace pool {

/// Category atom of all embedpool errors (`error.category() == pool_category`).
constexpr caf::atom_value pool_category = caf::atom("pool");

/// Error codes of the `pool` category. The numeric values are part of the wire
/// protocol: never renumber, only append.
enum class pool_errc : uint8_t {
  /// No worker credit and no room to wait (policy `reject`, or the pending
  /// queue is full). The message carries a retry hint.
  overloaded = 1,
  /// Empty text, invalid UTF-8, an empty batch or a message the node does not
  /// understand.
  invalid_input = 2,
  /// A text over `pool.max-text-bytes` or a batch over `pool.max-batch-items`.
  too_large = 3,
  /// The request waited or ran longer than `pool.request-timeout`.
  deadline_exceeded = 4,
  /// Workers failed the request `pool.max-attempts` times.
  worker_failed = 5,
  /// The node is draining and accepts no new work.
  shutting_down = 6,
  /// No worker can serve the request (all given up, or none started yet).
  unavailable = 7,
  /// The peer and the node speak different protocol versions (see
  /// pool/version.hpp); the message names both. Answered to `(hello_atom, N)`
  /// at connect, before any other request.
  protocol_mismatch = 8,
};

/// Stable snake_case name of a code, e.g. "overloaded".
const char* to_string(pool_errc code);

/// Parses a name produced by `to_string(pool_errc)`.
caf::optional<pool_errc> parse_pool_errc(const std::string& name);

/// Builds a `pool` error carrying a human-readable message as its context.
caf::error make_error(pool_errc code, std::string message);

/// Returns the code of a `pool` error, or none for errors of other categories.
caf::optional<pool_errc> pool_code(const caf::error& err);

/// The context message of any error, or "" if it has none.
std::string error_message(const caf::error& err);

/// Renders any error as "code: message" — "overloaded: no worker credit …" for
/// the pool category, CAF's own rendering otherwise.
std::string describe(const caf::error& err);

}  // namespace pool
