// Versions of this build and of the wire protocol. Part of embedpool::client.
#pragma once

#include <cstdint>
#include <string>

namespace pool {

/// The wire protocol this build speaks. A peer announces it with
/// `(hello_atom, protocol_version)` right after connecting; a node answers
/// `(hello_atom, protocol_version, version_string())` when they agree and the
/// `pool` error `protocol_mismatch` naming both versions when they do not.
/// Bump it whenever a message or a registered type changes shape (the type
/// names registered by `add_message_types` carry it too, so an older peer
/// fails to decode a newer struct instead of mis-reading it).
/// History: 1 = the first versioned protocol (status gained version and
/// protocol); peers without a hello are older.
constexpr uint32_t protocol_version = 1;

/// The project version, e.g. "0.1.0".
const char* project_version();

/// `git describe --always --dirty --tags` of the source tree when CMake
/// configured it, or "unknown" outside a git checkout.
const char* git_revision();

/// "0.1.0 (git <revision>)": what `status` and `/info` report as `version`.
std::string version_string();

/// The CAF version this was compiled against, e.g. "0.17.6".
std::string caf_version();

/// `--version` text of a binary without OpenBLAS (the client library):
/// "<program> <version_string()>\nprotocol N\nCAF x.y.z\n".
std::string version_text(const std::string& program);

}  // namespace pool
