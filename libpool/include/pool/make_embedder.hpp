// The factory of embedders: turns a [model] section into the embedder it
// names. Kept apart from the interface (pool/embedder.hpp) so that the
// interface depends on no implementation.
#pragma once

#include <memory>

#include <caf/expected.hpp>

#include "pool/embedder.hpp"

namespace pool {

struct model_config;

/// Creates the embedder that `cfg.kind` names ("hash" or "bert"); an error
/// names the offending key or file. The result is immutable and shared by
/// every worker of the model (see embedder's thread-safety).
caf::expected<std::shared_ptr<const embedder>> make_embedder(const model_config& cfg);

}  // namespace pool
