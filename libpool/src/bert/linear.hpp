// The weight of a BERT Linear layer, laid out once at load time for the way
// the encoder calls cblas_sgemm, and the product `y = x * W^T + beta * y`.
//
// Layout: torch stores W as [out x in]; here it is transposed to [in x out]
// and cut into column panels of `panel` columns, each panel a contiguous
// row-major [in x width] block (the last panel may be narrower). With one
// panel (`panel == out`) this is the plain [in x out] matrix, which OpenBLAS
// blocks and threads itself. With narrow panels, apply_linear cuts the
// product into pieces small enough for OpenBLAS's small-matrix sgemm kernels,
// which read the panel in place (one sequential stream) instead of packing
// it on every call: for a few tokens that halves the time, because the
// per-call packing of a weight matrix that is not in cache dominated.
#pragma once

#include <cstddef>
#include <vector>

namespace pool::bert {

/// Panel width used where the small-matrix kernels pay (see
/// preferred_panel_width).
constexpr size_t small_kernel_panel = 64;

/// The layout that suits the running OpenBLAS at `blas_threads` threads:
/// `small_kernel_panel` when it runs one thread and its sgemm has the AVX-512
/// small-matrix kernels (cores SkylakeX, Cooperlake, SapphireRapids); 0 (one
/// panel) otherwise, so big products keep OpenBLAS's own blocking and
/// threading. Thread-safe.
size_t preferred_panel_width(int blas_threads);

/// Thread-safety: immutable after packing; apply_linear may run on any number
/// of threads at once.
struct linear_weight {
  size_t in = 0;              // input features
  size_t out = 0;             // output features
  size_t panel = 0;           // columns per panel, in [1, out]
  std::vector<float> values;  // in * out floats, panels one after the other
};

/// Packs torch's row-major [out x in] `torch_weight` into panels of
/// `panel_width` columns (0, or >= out: one panel). `in` and `out` must be > 0.
linear_weight pack_linear(const float* torch_weight, size_t out, size_t in,
                          size_t panel_width);

/// torch's [out x in] layout back (for tests and tools).
std::vector<float> unpack_linear(const linear_weight& w);

/// y[rows x out] = x[rows x in] * W^T + beta * y, row-major with leading
/// dimensions `ldx` >= in and `ldy` >= out; every product through
/// cblas_sgemm. `rows` may be 0.
void apply_linear(const linear_weight& w, const float* x, size_t rows, size_t ldx,
                  float beta, float* y, size_t ldy);

}  // namespace pool::bert
