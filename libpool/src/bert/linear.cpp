#include "bert/linear.hpp"

#include <algorithm>
#include <cctype>
#include <stdexcept>
#include <string>

#include <cblas.h>

namespace pool::bert {
namespace {

// OpenBLAS (0.3.21) runs an sgemm through its small-matrix kernels, without
// packing, when m * n * k <= 100^3 (and the core has such kernels).
constexpr size_t small_gemm_volume = 1000000;

// Rows of x per small product: enough to reuse each weight element from
// registers and L1, few enough to keep the depth of the product useful.
constexpr size_t small_kernel_rows = 64;

// Rows that every panel passes over before the next rows: their slice of x
// stays in cache across panels (for 4096 rows: 92 -> 106 GFLOPS).
constexpr size_t panel_pass_rows = 512;

void sgemm(size_t m, size_t n, size_t k, const float* a, size_t lda, const float* b,
           size_t ldb, float beta, float* c, size_t ldc) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

bool has_small_matrix_kernels() {
  const char* name = openblas_get_corename();
  std::string core = name != nullptr ? name : "";
  std::transform(core.begin(), core.end(), core.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return core == "skylakex" || core == "cooperlake" || core == "sapphirerapids";
}

}  // namespace

size_t preferred_panel_width(int blas_threads) {
  static const bool small_kernels = has_small_matrix_kernels();
  return blas_threads <= 1 && small_kernels ? small_kernel_panel : 0;
}

linear_weight pack_linear(const float* torch_weight, size_t out, size_t in,
                          size_t panel_width) {
  if (in == 0 || out == 0) {
    throw std::invalid_argument("pack_linear: empty weight");
  }
  linear_weight w;
  w.in = in;
  w.out = out;
  w.panel = panel_width == 0 ? out : std::min(panel_width, out);
  w.values.resize(in * out);
  for (size_t first = 0; first < out; first += w.panel) {
    const size_t width = std::min(w.panel, out - first);
    float* panel = w.values.data() + first * in;
    for (size_t k = 0; k < in; ++k) {
      for (size_t c = 0; c < width; ++c) {
        panel[k * width + c] = torch_weight[(first + c) * in + k];
      }
    }
  }
  return w;
}

std::vector<float> unpack_linear(const linear_weight& w) {
  std::vector<float> torch_weight(w.in * w.out);
  for (size_t first = 0; first < w.out; first += w.panel) {
    const size_t width = std::min(w.panel, w.out - first);
    const float* panel = w.values.data() + first * w.in;
    for (size_t k = 0; k < w.in; ++k) {
      for (size_t c = 0; c < width; ++c) {
        torch_weight[(first + c) * w.in + k] = panel[k * width + c];
      }
    }
  }
  return torch_weight;
}

void apply_linear(const linear_weight& w, const float* x, size_t rows, size_t ldx,
                  float beta, float* y, size_t ldy) {
  if (rows == 0) {
    return;
  }
  if (w.panel >= w.out) {
    sgemm(rows, w.out, w.in, x, ldx, w.values.data(), w.out, beta, y, ldy);
    return;
  }
  for (size_t pass = 0; pass < rows; pass += panel_pass_rows) {
    const size_t pass_end = std::min(rows, pass + panel_pass_rows);
    for (size_t first = 0; first < w.out; first += w.panel) {
      const size_t width = std::min(w.panel, w.out - first);
      const float* panel = w.values.data() + first * w.in;
      for (size_t r = pass; r < pass_end; r += small_kernel_rows) {
        const size_t block = std::min(small_kernel_rows, pass_end - r);
        // Equal depth chunks with block * width * depth <= small_gemm_volume.
        const size_t max_depth = std::max<size_t>(1, small_gemm_volume / (block * width));
        const size_t chunks = (w.in + max_depth - 1) / max_depth;
        const size_t depth = (w.in + chunks - 1) / chunks;
        for (size_t k = 0; k < w.in; k += depth) {
          sgemm(block, width, std::min(depth, w.in - k), x + r * ldx + k, ldx,
                panel + k * width, width, k == 0 ? beta : 1.0f, y + r * ldy + first, ldy);
        }
      }
    }
  }
}

}  // namespace pool::bert
