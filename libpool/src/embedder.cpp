#include "pool/embedder.hpp"

#include "pool/config.hpp"
#include "pool/error.hpp"

#include <cblas.h>

namespace pool {

void set_blas_threads(int n) {
  openblas_set_num_threads(n < 1 ? 1 : n);
}

}  // namespace pool
