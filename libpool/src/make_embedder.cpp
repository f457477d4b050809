#include "pool/make_embedder.hpp"

#include <exception>
#include <new>

#include "pool/config.hpp"
#include "pool/error.hpp"

#include "bert/bert_embedder.hpp"
#include "hash_embedder.hpp"

namespace pool {

caf::expected<std::shared_ptr<const embedder>> make_embedder(const model_config& cfg) {
  if (cfg.kind == "hash") {
    if (auto err = detail::hash_embedder::validate(cfg))
      return err;
    try {
      return std::shared_ptr<const embedder>{
          std::make_shared<detail::hash_embedder>(cfg.dim, cfg.hash_buckets)};
    } catch (const std::bad_alloc&) {
      return make_error(pool_errc::invalid_input,
                        "model.dim * model.hash-buckets: out of memory building the "
                        "projection");
    } catch (const std::exception& ex) {
      return make_error(pool_errc::invalid_input, ex.what());
    }
  }
  if (cfg.kind == "bert") {
    return bert::make_bert_embedder(cfg);
  }
  return make_error(pool_errc::invalid_input, "model.kind = \"" + cfg.kind +
                                                  "\" is unknown (expected hash | bert)");
}

}  // namespace pool
