#include "bert/kernels.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>

// GCC vector extensions (16 floats) give the compiler straight-line vector
// code at -O2 without -ffast-math; target_clones compiles each kernel for
// three x86-64 levels and dispatches through an ifunc.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define EMBEDPOOL_KERNEL \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define EMBEDPOOL_KERNEL
#endif
#define EMBEDPOOL_INLINE inline __attribute__((always_inline))

// The vector helpers below are always inlined, so no vector ever crosses a
// function boundary and the AVX-512 argument-passing ABI note does not apply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace pool::bert::detail {
namespace {

constexpr size_t width = 16;
typedef float vf __attribute__((vector_size(width * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(width * sizeof(int32_t))));

EMBEDPOOL_INLINE vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

EMBEDPOOL_INLINE void store(float* p, const vf& v) {
  std::memcpy(p, &v, sizeof v);
}

EMBEDPOOL_INLINE vf splat(float x) {
  return vf{} + x;
}

EMBEDPOOL_INLINE vf vmin(const vf& a, const vf& b) {
  return a < b ? a : b;
}

EMBEDPOOL_INLINE vf vmax(const vf& a, const vf& b) {
  return a > b ? a : b;
}

EMBEDPOOL_INLINE float hsum(const vf& v) {
  float s = 0.0f;
  for (size_t i = 0; i < width; ++i) {
    s += v[i];
  }
  return s;
}

EMBEDPOOL_INLINE float hmax(const vf& v) {
  float m = v[0];
  for (size_t i = 1; i < width; ++i) {
    m = v[i] > m ? v[i] : m;
  }
  return m;
}

// exp(x), relative error below 2e-7 on [-87.3, 88.3]; 0 below that range
// (Cephes' expf: x = n ln2 + r, degree-6 polynomial in r, scale by 2^n).
EMBEDPOOL_INLINE vf vexp(const vf& in) {
  const vf x = vmin(vmax(in, splat(-87.3f)), splat(88.3f));
  // Round x / ln2 to the nearest integer with the 1.5 * 2^23 trick.
  const vf magic = splat(12582912.0f);
  const vf fx = (x * 1.44269504088896341f + magic) - magic;
  vf r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const vf y = p * (r * r) + r + 1.0f;
  const vi n = __builtin_convertvector(fx, vi);
  const vi bits = (n + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return in < -87.3f ? splat(0.0f) : y * scale;
}

// erf(x), absolute error about 1e-7: a rational approximation on [-4, 4]
// (odd degree-13 numerator, even degree-8 denominator; erf is +-1 in float
// beyond), the form used by Eigen and XLA.
EMBEDPOOL_INLINE vf verf(const vf& in) {
  const vf x = vmin(vmax(in, splat(-4.0f)), splat(4.0f));
  const vf x2 = x * x;
  vf p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
  p = x2 * p + -2.10102402082508e-06f;
  p = x2 * p + -5.69250639462346e-05f;
  p = x2 * p + -7.34990630326855e-04f;
  p = x2 * p + -2.95459980854025e-03f;
  p = x2 * p + -1.60960333262415e-02f;
  p = x * p;
  vf q = x2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
  q = x2 * q + -1.68282697438203e-03f;
  q = x2 * q + -7.37332916720468e-03f;
  q = x2 * q + -1.42647390514189e-02f;
  return p / q;
}

EMBEDPOOL_INLINE vf vgelu(const vf& v) {
  return 0.5f * v * (1.0f + verf(v * 0.70710678118654752440f));
}

enum class unary { gelu, erf, exp };

template <unary Op>
EMBEDPOOL_INLINE vf apply(const vf& v) {
  if constexpr (Op == unary::gelu) {
    return vgelu(v);
  } else if constexpr (Op == unary::erf) {
    return verf(v);
  } else {
    return vexp(v);
  }
}

// Applies `Op` to n floats (plus bias, if any) in place, the tail through a
// padded vector.
template <unary Op>
EMBEDPOOL_INLINE void map_row(float* row, const float* bias, size_t n) {
  size_t c = 0;
  for (; c + width <= n; c += width) {
    vf v = load(row + c);
    if (bias != nullptr) {
      v += load(bias + c);
    }
    store(row + c, apply<Op>(v));
  }
  if (c < n) {
    float tmp[width] = {};
    for (size_t k = c; k < n; ++k) {
      tmp[k - c] = row[k] + (bias != nullptr ? bias[k] : 0.0f);
    }
    store(tmp, apply<Op>(load(tmp)));
    std::memcpy(row + c, tmp, (n - c) * sizeof(float));
  }
}

}  // namespace

EMBEDPOOL_KERNEL void add_bias(float* m, size_t rows, size_t cols, const float* bias) {
  for (size_t r = 0; r < rows; ++r) {
    float* row = m + r * cols;
    size_t c = 0;
    for (; c + width <= cols; c += width) {
      store(row + c, load(row + c) + load(bias + c));
    }
    for (; c < cols; ++c) {
      row[c] += bias[c];
    }
  }
}

EMBEDPOOL_KERNEL void bias_gelu(float* m, size_t rows, size_t cols, const float* bias) {
  for (size_t r = 0; r < rows; ++r) {
    map_row<unary::gelu>(m + r * cols, bias, cols);
  }
}

EMBEDPOOL_KERNEL void bias_layer_norm(float* x, size_t rows, size_t h, const float* bias,
                                      const float* g, const float* b, float eps) {
  const float inv_h = 1.0f / static_cast<float>(h);
  for (size_t r = 0; r < rows; ++r) {
    float* row = x + r * h;
    vf acc = splat(0.0f);
    float sum = 0.0f;
    size_t c = 0;
    for (; c + width <= h; c += width) {
      vf v = load(row + c);
      if (bias != nullptr) {
        v += load(bias + c);
        store(row + c, v);
      }
      acc += v;
    }
    for (; c < h; ++c) {
      if (bias != nullptr) {
        row[c] += bias[c];
      }
      sum += row[c];
    }
    const float mean = (hsum(acc) + sum) * inv_h;
    vf vacc = splat(0.0f);
    float var = 0.0f;
    for (c = 0; c + width <= h; c += width) {
      const vf d = load(row + c) - mean;
      vacc += d * d;
    }
    for (; c < h; ++c) {
      const float d = row[c] - mean;
      var += d * d;
    }
    const float inv_std = 1.0f / std::sqrt((hsum(vacc) + var) * inv_h + eps);
    for (c = 0; c + width <= h; c += width) {
      store(row + c, (load(row + c) - mean) * inv_std * load(g + c) + load(b + c));
    }
    for (; c < h; ++c) {
      row[c] = (row[c] - mean) * inv_std * g[c] + b[c];
    }
  }
}

EMBEDPOOL_KERNEL void softmax_rows(float* s, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    float* row = s + r * cols;
    vf vm = splat(row[0]);
    size_t c = 0;
    for (; c + width <= cols; c += width) {
      vm = vmax(vm, load(row + c));
    }
    float mx = hmax(vm);
    for (; c < cols; ++c) {
      mx = row[c] > mx ? row[c] : mx;
    }
    vf acc = splat(0.0f);
    for (c = 0; c + width <= cols; c += width) {
      const vf e = vexp(load(row + c) - mx);
      store(row + c, e);
      acc += e;
    }
    float sum = hsum(acc);
    if (c < cols) {
      float tmp[width];
      for (size_t k = 0; k < width; ++k) {
        tmp[k] = c + k < cols ? row[c + k] - mx : -1e30f;  // exp gives 0
      }
      store(tmp, vexp(load(tmp)));
      for (size_t k = c; k < cols; ++k) {
        row[k] = tmp[k - c];
        sum += row[k];
      }
    }
    const float inv = 1.0f / sum;
    for (c = 0; c + width <= cols; c += width) {
      store(row + c, load(row + c) * inv);
    }
    for (; c < cols; ++c) {
      row[c] *= inv;
    }
  }
}

EMBEDPOOL_KERNEL void erf_n(const float* in, float* out, size_t n) {
  if (in != out) {
    std::memmove(out, in, n * sizeof(float));
  }
  map_row<unary::erf>(out, nullptr, n);
}

EMBEDPOOL_KERNEL void exp_n(const float* in, float* out, size_t n) {
  if (in != out) {
    std::memmove(out, in, n * sizeof(float));
  }
  map_row<unary::exp>(out, nullptr, n);
}

}  // namespace pool::bert::detail
