#include "bert/encoder.hpp"

#include "bert/kernels.hpp"
#include "bert/linear.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include <cblas.h>

namespace pool::bert {
namespace {

using detail::add_bias;
using detail::bias_gelu;
using detail::bias_layer_norm;
using detail::softmax_rows;

void check_size(const std::vector<float>& v, size_t expected, const std::string& name) {
  if (v.size() != expected) {
    throw std::invalid_argument("bert encoder: tensor " + name + " has " +
                                std::to_string(v.size()) + " floats, expected " +
                                std::to_string(expected));
  }
}

void check_linear(const linear_weight& w, size_t out, size_t in,
                  const std::string& name) {
  if (w.out != out || w.in != in || w.values.size() != out * in || w.panel == 0 ||
      w.panel > out) {
    throw std::invalid_argument(
        "bert encoder: tensor " + name + " is [" + std::to_string(w.out) + " x " +
        std::to_string(w.in) + "] with " + std::to_string(w.values.size()) +
        " floats in panels of " + std::to_string(w.panel) + ", expected [" +
        std::to_string(out) + " x " + std::to_string(in) + "]");
  }
}

void check_positive(int value, const char* name) {
  if (value <= 0) {
    throw std::invalid_argument(std::string("bert encoder: config ") + name +
                                " must be positive, got " + std::to_string(value));
  }
}

// C[m x n] = alpha * A[m x k] * op(B) + beta * C, row-major; `b_trans` means B
// is stored [n x k], otherwise [k x n].
void gemm(bool b_trans, size_t m, size_t n, size_t k, float alpha, const float* a,
          size_t lda, const float* b, size_t ldb, float beta, float* c, size_t ldc) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, b_trans ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k),
              alpha, a, static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

}  // namespace

encoder::encoder(std::shared_ptr<const bert_model> model, size_t chunk_tokens)
    : model_(std::move(model)), chunk_tokens_(std::max<size_t>(chunk_tokens, 1)) {
  if (model_ == nullptr) {
    throw std::invalid_argument("bert encoder: no model");
  }
  const bert_config& c = cfg();
  check_positive(c.vocab_size, "vocab_size");
  check_positive(c.hidden_size, "hidden_size");
  check_positive(c.num_heads, "num_attention_heads");
  check_positive(c.intermediate_size, "intermediate_size");
  check_positive(c.max_position_embeddings, "max_position_embeddings");
  check_positive(c.type_vocab_size, "type_vocab_size");
  if (c.num_layers < 0) {
    throw std::invalid_argument("bert encoder: config num_hidden_layers is negative");
  }
  if (c.hidden_size % c.num_heads != 0) {
    throw std::invalid_argument(
        "bert encoder: hidden_size " + std::to_string(c.hidden_size) +
        " is not a multiple of num_attention_heads " + std::to_string(c.num_heads));
  }
  if (!std::isfinite(c.layer_norm_eps) || c.layer_norm_eps < 0.0f) {
    throw std::invalid_argument("bert encoder: layer_norm_eps must be finite and >= 0");
  }
  const size_t h = static_cast<size_t>(c.hidden_size);
  const size_t i = static_cast<size_t>(c.intermediate_size);
  const bert_weights& w = model_->weights;
  check_size(w.word_emb, static_cast<size_t>(c.vocab_size) * h, "word_embeddings");
  check_size(w.pos_emb, static_cast<size_t>(c.max_position_embeddings) * h,
             "position_embeddings");
  check_size(w.type_emb, static_cast<size_t>(c.type_vocab_size) * h,
             "token_type_embeddings");
  check_size(w.emb_ln_g, h, "embeddings.LayerNorm.weight");
  check_size(w.emb_ln_b, h, "embeddings.LayerNorm.bias");
  if (w.layers.size() != static_cast<size_t>(c.num_layers)) {
    throw std::invalid_argument("bert encoder: " + std::to_string(w.layers.size()) +
                                " layers of weights, config says " +
                                std::to_string(c.num_layers));
  }
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const layer_weights& lw = w.layers[l];
    const std::string p = "layer." + std::to_string(l) + ".";
    check_linear(lw.qkv_w, 3 * h, h, p + "qkv.weight");
    check_size(lw.qkv_b, 3 * h, p + "qkv.bias");
    check_linear(lw.attn_out_w, h, h, p + "attention.output.dense.weight");
    check_size(lw.attn_out_b, h, p + "attention.output.dense.bias");
    check_size(lw.attn_ln_g, h, p + "attention.output.LayerNorm.weight");
    check_size(lw.attn_ln_b, h, p + "attention.output.LayerNorm.bias");
    check_linear(lw.ffn_in_w, i, h, p + "intermediate.dense.weight");
    check_size(lw.ffn_in_b, i, p + "intermediate.dense.bias");
    check_linear(lw.ffn_out_w, h, i, p + "output.dense.weight");
    check_size(lw.ffn_out_b, h, p + "output.dense.bias");
    check_size(lw.ffn_ln_g, h, p + "output.LayerNorm.weight");
    check_size(lw.ffn_ln_b, h, p + "output.LayerNorm.bias");
  }
}

void encoder::encode(const std::vector<std::vector<int32_t>>& token_ids,
                     float* out) const {
  const auto vocab = cfg().vocab_size;
  for (size_t s = 0; s < token_ids.size(); ++s) {
    const auto& ids = token_ids[s];
    if (ids.empty()) {
      throw std::invalid_argument("bert encoder: sequence " + std::to_string(s) +
                                  " is empty");
    }
    if (ids.size() > max_tokens()) {
      throw std::invalid_argument("bert encoder: sequence " + std::to_string(s) +
                                  " has " + std::to_string(ids.size()) +
                                  " tokens, at most " + std::to_string(max_tokens()) +
                                  " fit");
    }
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab) {
        throw std::invalid_argument(
            "bert encoder: token id " + std::to_string(id) + " in sequence " +
            std::to_string(s) + " is outside the vocabulary of " + std::to_string(vocab));
      }
    }
  }
  // Cut into chunks of whole sequences of at most chunk_tokens_ tokens.
  size_t first = 0;
  while (first < token_ids.size()) {
    size_t last = first;
    size_t tokens = 0;
    while (last < token_ids.size() &&
           (last == first || tokens + token_ids[last].size() <= chunk_tokens_)) {
      tokens += token_ids[last].size();
      ++last;
    }
    encode_chunk(token_ids, first, last, out + first * dim());
    first = last;
  }
}

size_t encoder::scratch_bytes(size_t sequences, size_t max_len) const {
  const size_t h = static_cast<size_t>(cfg().hidden_size);
  const size_t inter = static_cast<size_t>(cfg().intermediate_size);
  // A chunk holds at most chunk_tokens_ tokens, or one longer sequence.
  const size_t total = std::min(sequences * max_len, std::max(chunk_tokens_, max_len));
  return (total * (5 * h + inter) + max_len * max_len) * sizeof(float);
}

void encoder::encode_chunk(const std::vector<std::vector<int32_t>>& token_ids,
                           size_t first, size_t last, float* out) const {
  const bert_config& c = cfg();
  const bert_weights& w = model_->weights;
  const size_t h = static_cast<size_t>(c.hidden_size);
  const size_t inter = static_cast<size_t>(c.intermediate_size);
  const size_t heads = static_cast<size_t>(c.num_heads);
  const size_t d = h / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));

  // Row offset of every sequence in the packed token matrix.
  std::vector<size_t> offsets(last - first + 1, 0);
  size_t max_len = 0;
  for (size_t s = first; s < last; ++s) {
    offsets[s - first + 1] = offsets[s - first] + token_ids[s].size();
    max_len = std::max(max_len, token_ids[s].size());
  }
  const size_t total = offsets.back();

  // One scratch allocation per chunk, uninitialised (every element is written
  // before it is read).
  const size_t n_x = total * h, n_qkv = total * 3 * h, n_ctx = total * h,
               n_ffn = total * inter, n_scores = max_len * max_len;
  std::unique_ptr<float[]> buf(new float[n_x + n_qkv + n_ctx + n_ffn + n_scores]);
  float* x = buf.get();
  float* qkv = x + n_x;
  float* ctx = qkv + n_qkv;
  float* ffn = ctx + n_ctx;
  float* scores = ffn + n_ffn;

  // Embeddings: word + position + token type 0, then LayerNorm.
  for (size_t s = first; s < last; ++s) {
    const auto& ids = token_ids[s];
    float* rows = x + offsets[s - first] * h;
    for (size_t p = 0; p < ids.size(); ++p) {
      const float* we = w.word_emb.data() + static_cast<size_t>(ids[p]) * h;
      const float* pe = w.pos_emb.data() + p * h;
      const float* te = w.type_emb.data();
      float* row = rows + p * h;
      for (size_t k = 0; k < h; ++k) {
        row[k] = we[k] + pe[k] + te[k];
      }
    }
  }
  bias_layer_norm(x, total, h, nullptr, w.emb_ln_g.data(), w.emb_ln_b.data(),
                  c.layer_norm_eps);

  for (const layer_weights& lw : w.layers) {
    // Fused Q, K, V projection of all tokens: qkv[total x 3H].
    apply_linear(lw.qkv_w, x, total, h, 0.0f, qkv, 3 * h);
    add_bias(qkv, total, 3 * h, lw.qkv_b.data());

    // Attention per sequence and head on strided views of qkv.
    for (size_t s = 0; s + 1 < offsets.size(); ++s) {
      const size_t len = offsets[s + 1] - offsets[s];
      const float* base = qkv + offsets[s] * 3 * h;
      for (size_t hd = 0; hd < heads; ++hd) {
        const float* q = base + hd * d;
        const float* k = q + h;
        const float* v = q + 2 * h;
        gemm(true, len, len, d, scale, q, 3 * h, k, 3 * h, 0.0f, scores, len);
        softmax_rows(scores, len, len);
        gemm(false, len, d, len, 1.0f, scores, len, v, 3 * h, 0.0f,
             ctx + offsets[s] * h + hd * d, h);
      }
    }

    // Output projection accumulated onto the residual, then LayerNorm.
    apply_linear(lw.attn_out_w, ctx, total, h, 1.0f, x, h);
    bias_layer_norm(x, total, h, lw.attn_out_b.data(), lw.attn_ln_g.data(),
                    lw.attn_ln_b.data(), c.layer_norm_eps);

    // FFN: dense I + GELU, dense H onto the residual, LayerNorm.
    apply_linear(lw.ffn_in_w, x, total, h, 0.0f, ffn, inter);
    bias_gelu(ffn, total, inter, lw.ffn_in_b.data());
    apply_linear(lw.ffn_out_w, ffn, total, inter, 1.0f, x, h);
    bias_layer_norm(x, total, h, lw.ffn_out_b.data(), lw.ffn_ln_g.data(),
                    lw.ffn_ln_b.data(), c.layer_norm_eps);
  }

  // Pooling and optional L2 normalisation.
  for (size_t s = 0; s + 1 < offsets.size(); ++s) {
    float* row = out + s * h;
    const float* rows = x + offsets[s] * h;
    const size_t len = offsets[s + 1] - offsets[s];
    if (c.pooling == pooling_mode::cls) {
      std::copy(rows, rows + h, row);
    } else {
      std::fill(row, row + h, 0.0f);
      for (size_t t = 0; t < len; ++t) {
        for (size_t k = 0; k < h; ++k) {
          row[k] += rows[t * h + k];
        }
      }
      const float inv = 1.0f / static_cast<float>(len);
      for (size_t k = 0; k < h; ++k) {
        row[k] *= inv;
      }
    }
    if (c.normalize) {
      float sq = 0.0f;
      for (size_t k = 0; k < h; ++k) {
        sq += row[k] * row[k];
      }
      const float inv = 1.0f / std::max(std::sqrt(sq), 1e-12f);
      for (size_t k = 0; k < h; ++k) {
        row[k] *= inv;
      }
    }
  }
}

}  // namespace pool::bert
