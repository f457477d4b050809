// Element-wise kernels of the BERT encoder (everything that is not a matrix
// product). Each is compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2+FMA) and
// baseline x86-64, picked once at load time by the CPU (GCC target_clones).
//
// All functions are pure: they read and write only the memory passed in and
// are safe to call from any number of threads on disjoint buffers.
#pragma once

#include <cstddef>

namespace pool::bert::detail {

/// m[r][c] += bias[c] for every row of the row-major m[rows x cols].
void add_bias(float* m, size_t rows, size_t cols, const float* bias);

/// In place: m[r][c] = gelu(m[r][c] + bias[c]) with GELU's erf form
/// 0.5 * x * (1 + erf(x / sqrt(2))).
void bias_gelu(float* m, size_t rows, size_t cols, const float* bias);

/// In place on every row of x[rows x h]: y = (x + bias - mean) /
/// sqrt(var + eps) * g + b with the biased variance, like torch.nn.LayerNorm.
/// `bias` may be null (no bias).
void bias_layer_norm(float* x, size_t rows, size_t h, const float* bias, const float* g,
                     const float* b, float eps);

/// In place: a numerically stable softmax of every row of s[rows x cols].
void softmax_rows(float* s, size_t rows, size_t cols);

/// out[i] = erf(in[i]) and out[i] = exp(in[i]) with the kernels' own
/// approximations (for tests; `in` and `out` may alias).
void erf_n(const float* in, float* out, size_t n);
void exp_n(const float* in, float* out, size_t n);

}  // namespace pool::bert::detail
