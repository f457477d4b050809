// Mutual TLS for nodes and peers (CAF's openssl module). The same `[tls]`
// keys configure the node, the CLI and the load generator.
#pragma once

#include <caf/error.hpp>
#include <caf/fwd.hpp>

#include "pool/config.hpp"

namespace pool {

/// Checks a `[tls]` section before CAF sees it, because CAF 0.17 aborts the
/// process on a missing certificate and hangs forever on a key that does not
/// match its certificate: every file must be readable PEM, the key must match
/// the certificate (decrypted with `passphrase` if set), and the CA file must
/// load. An error names the key and the file. A disabled section is valid
/// unless it sets `key` or `ca-file` without `certificate`.
caf::error validate_tls(const tls_section& tls);

/// Loads CAF's openssl manager into `cfg` and hands it the files; call after
/// `validate_tls` succeeded and before constructing the actor system.
void enable_tls(caf::actor_system_config& cfg, const tls_section& tls);

}  // namespace pool
